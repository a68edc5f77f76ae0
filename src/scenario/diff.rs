//! A line diff for trees: `- ` expected only, `+ ` actual only, `  ` both.

/// The diff of two line lists, with `context` unchanged lines around each change (runs of
/// unchanged lines further away are shown as `  ...`).
pub(crate) fn diff(expected: &[String], actual: &[String], context: usize) -> Vec<String> {
    let (n, m) = (expected.len(), actual.len());
    // lcs[i][j]: the longest common subsequence of expected[i..] and actual[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            ops.push((' ', &expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', &expected[i]));
            i += 1;
        } else {
            ops.push(('+', &actual[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = ops.iter().enumerate().filter(|(_, (c, _))| *c != ' ').map(|(k, _)| k).collect();
    let near = |k: usize| changed.iter().any(|&c| k + context >= c && k <= c + context);
    let mut out = Vec::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if *c == ' ' && !near(k) {
            if !skipped {
                out.push("  ...".to_owned());
                skipped = true;
            }
            continue;
        }
        skipped = false;
        out.push(format!("{c} {line}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn marks_changes_with_context() {
        let d = diff(&v(&["/", "/a: x", "/b: y", "/c: z", "/d: w"]), &v(&["/", "/a: x", "/b: Y", "/c: z", "/d: w"]), 1);
        assert_eq!(d, v(&["  ...", "  /a: x", "- /b: y", "+ /b: Y", "  /c: z", "  ..."]));
    }
}
