//! The reservations table: `FsReserver` measured here, `DynamoReserver` on
//! moto measured by conductor-aws's `dynamo_reserver` bench (which links the
//! AWS SDK this binary does not), both through
//! `conductor_testkit::reserve_figures`.

use std::path::Path;
use std::sync::Arc;

use conductor_core::{FsReserver, Layout};
use conductor_testkit::reserve_figures::{measure, HEADER};

/// The table: `FsReserver` under a fresh directory, then the DynamoReserver
/// row read from `dynamo` (the output of the `dynamo_reserver` bench).
pub fn section(rt: &tokio::runtime::Runtime, dynamo: Option<&Path>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = Arc::new(FsReserver::new(&Layout::new(
        dir.path().join("etc"),
        dir.path().join("runner"),
    )));
    let mut t = String::from(HEADER);
    t.push_str(
        &rt.block_on(measure(fs, 200, 8))
            .row("`FsReserver` (ext4, fsync on)"),
    );
    match dynamo.and_then(dynamo_row) {
        Some(row) => t.push_str(&row),
        None => t.push_str("| `DynamoReserver` on moto | not measured in this run | | | | |\n"),
    }
    t
}

/// The `reserve-read` table the `dynamo_reserver` bench printed into
/// `dynamo`: a plan's reservation read at 0 and 100,000 other items.
pub fn read_section(dynamo: Option<&Path>) -> String {
    dynamo
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| read_table(&text))
        .unwrap_or_else(|| {
            "Not measured in this run (the `dynamo_reserver` bench failed or did not run).\n".into()
        })
}

/// The table lines after the `<!-- reserve-read -->` line of `text`.
fn read_table(text: &str) -> Option<String> {
    let (_, after) = text.split_once("<!-- reserve-read -->\n")?;
    let table: String = after
        .lines()
        .take_while(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    (!table.is_empty()).then_some(table)
}

/// The DynamoReserver row the `dynamo_reserver` bench printed into `path`.
fn dynamo_row(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    row_of(&text)
}

/// The first table row of `text` that names `DynamoReserver`.
fn row_of(text: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with("| `DynamoReserver`"))
        .map(|l| format!("{l}\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_bench_row_among_cargo_output() {
        let out = "   Compiling x\n| `DynamoReserver` on moto | 30.5 ms / 40.1 ms | 1 | 2 | 3 | 4 (8 clients) |\nbench done\n";
        let row = super::row_of(out).unwrap();
        assert!(
            row.starts_with("| `DynamoReserver` on moto | 30.5 ms"),
            "{row}"
        );
        assert!(super::row_of("nothing here").is_none());
        let out =
            format!("{out}\n<!-- reserve-read -->\n| a | b |\n|---|---|\n| 1 | 2 |\nbench: done\n");
        assert_eq!(
            super::read_table(&out).unwrap(),
            "| a | b |\n|---|---|\n| 1 | 2 |\n"
        );
        assert!(super::read_table(out.split("<!--").next().unwrap()).is_none());
    }
}
