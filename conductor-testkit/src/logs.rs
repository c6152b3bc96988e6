//! Log contents for test failure messages: a test that names a Salt log
//! (a run's `state_runs/...` or `orch_state_run-...` file, the master's or a
//! minion's log) shows its end, bounded, so the failure explains itself.

use std::fmt::Write;
use std::path::Path;

use conductor_core::StateFailure;

/// How much of a log a failure message shows by default.
pub const TAIL_BYTES: usize = 4096;

/// The last `max_bytes` of the file at `path`, headed by its path (and by
/// how much was left out); says so when the file cannot be read.
pub fn tail(path: &Path, max_bytes: usize) -> String {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return format!("--- {} (cannot read it: {e})", path.display()),
    };
    let start = bytes.len().saturating_sub(max_bytes);
    let mut text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    if start > 0 {
        // Start at a whole line when one begins in the kept part.
        if let Some(nl) = text.find('\n') {
            text.drain(..=nl);
        }
    }
    let cut = if start > 0 {
        format!(", its last {} of {} bytes", text.len(), bytes.len())
    } else {
        String::new()
    };
    format!("--- {}{cut}:\n{}", path.display(), text.trim_end())
}

/// [`tail`] of each path, one after the other.
pub fn tails<'a>(paths: impl IntoIterator<Item = &'a Path>, max_bytes: usize) -> String {
    paths
        .into_iter()
        .map(|p| tail(p, max_bytes))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each state failure (minion, state, comment) followed by the end of the
/// log it names, [`TAIL_BYTES`] at most; a log named by several failures is
/// shown once.
pub fn state_failures(failures: &[StateFailure]) -> String {
    let mut out = String::new();
    let mut shown = Vec::new();
    for f in failures {
        let _ = writeln!(out, "{} {}: {}", f.minion, f.state, f.comment);
        if let Some(log) = f.log.as_deref().filter(|l| !shown.contains(l)) {
            let _ = writeln!(out, "{}", tail(log, TAIL_BYTES));
            shown.push(log);
        }
    }
    if failures.is_empty() {
        out.push_str("(no state failures)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_in_whole_lines_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.log");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &text).unwrap();
        let t = tail(&p, 100);
        assert!(
            t.starts_with(&format!("--- {}, its last", p.display())),
            "{t}"
        );
        assert!(t.ends_with("line 999"), "{t}");
        assert!(t.len() < 200, "{t}");
        assert!(t.lines().skip(1).all(|l| l.starts_with("line ")), "{t}");
        std::fs::write(&p, "short\n").unwrap();
        assert_eq!(tail(&p, 100), format!("--- {}:\nshort", p.display()));
        assert!(tail(&dir.path().join("nope"), 10).contains("cannot read it"));
    }

    #[test]
    fn state_failures_show_each_log_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state_run-x.json");
        std::fs::write(&log, "{\"m1\": {\"result\": false}}").unwrap();
        let f = |m: &str| StateFailure {
            minion: m.into(),
            state: "s".into(),
            comment: "bad".into(),
            log: Some(log.clone()),
        };
        let text = state_failures(&[f("m1"), f("m2")]);
        assert_eq!(text.matches("\"result\": false").count(), 1, "{text}");
        assert!(text.contains("m2 s: bad"), "{text}");
    }
}
