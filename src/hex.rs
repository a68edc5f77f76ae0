//! Hex digits for bytes, and bytes from hex digits: the one codec behind file data on the
//! wire ([`crate::layer::FileData`]'s serde form), the scenarios' `!hex` values, the
//! index's file-handle names, and the images' digests and `%XX` escapes.
//!
//! A table lookup per nibble, never a `format!` per byte: file data on the wire can be
//! tens of megabytes (the worker took seconds to spell a 70 MB file one `format!("{:02x}")`
//! at a time; BENCHMARKS.md, "The kernel tier's wire").

/// The lower-case digits, by value.
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex digits for `bytes`, two per byte.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The value of one hex digit, either case.
pub(crate) fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The bytes that `text` spells, two hex digits (either case) per byte; `None` for an odd
/// count or anything that is not a digit (no sign, no space, no `0x`).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits.chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(text.len(), 512);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff"), "{text}");
        assert_eq!(decode(&text), Some(all.clone()));
        assert_eq!(decode(&text.to_uppercase()), Some(all));
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(""), Some(vec![]));
    }

    #[test]
    fn anything_but_pairs_of_digits_is_refused() {
        // `u8::from_str_radix` takes a sign: "+f" would have been 15.
        for bad in ["+f", "0", "abc", "0x", " 0", "g0", "0 ", "é0"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
