//! Runs the bad-input corpus of `tests/bad-input/` against the binary.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use conductor_testkit::bin_lab::BinLab;
use serde::Deserialize;

use crate::support::Lab;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    command: String,
    args: Vec<String>,
    expect: String,
    #[serde(default)]
    pillar: Option<String>,
    #[serde(default)]
    pillar_hex: Option<String>,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/bad-input")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arg(s: &str) -> OsString {
    match s.strip_prefix("hex:") {
        Some(h) => OsString::from_vec(unhex(h)),
        None => OsString::from(s),
    }
}

#[test]
fn every_bad_input_exits_2_names_the_input_and_writes_nothing() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 50,
        "the corpus holds at least 50 cases, found {}",
        paths.len()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let case: Case = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab::example(dir.path());
        match (&case.pillar, &case.pillar_hex) {
            (None, None) => {}
            (text, hex) => lab.write_pillar(
                text.clone()
                    .map(String::into_bytes)
                    .unwrap_or_else(|| unhex(hex.as_deref().unwrap())),
            ),
        }
        let mut args = vec![OsString::from("group"), OsString::from(&case.command)];
        args.extend(case.args.iter().map(|a| arg(a)));
        args.push("--no-salt".into());
        if case.command != "plan" {
            args.extend(["--provisioner".into(), "ec2".into()]);
        }
        let out = BinLab::command(&lab, &args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let name = path.file_name().unwrap().to_string_lossy();
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name} ({}): exit {:?}: {err}",
                case.description,
                out.status.code()
            ));
        } else if !err.contains(&case.expect) {
            failures.push(format!(
                "{name} ({}): message lacks {:?}: {err}",
                case.description, case.expect
            ));
        }
        let written = lab.files();
        if !written.is_empty() {
            failures.push(format!("{name}: wrote {written:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n")
    );
}
