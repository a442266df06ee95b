//! The `anchorage` binary's command line: subcommands listed, `check` reporting key paths,
//! and bad options refused with status 2.

use std::process::Command;

fn anchorage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anchorage"))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("anchorage-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_lists_every_subcommand() {
    let out = anchorage().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for sub in ["up", "proxy", "relay", "ctl", "callgen", "check"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{text}"
        );
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let path = temp_file(
        "good.toml",
        "[node]\nid = \"p1\"\n[relay]\ntimeout_s = 30\n",
    );
    let out = anchorage()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}: ok\n", path.display())
    );
}

#[test]
fn check_reports_every_error_with_its_key_path() {
    let path = temp_file(
        "bad.toml",
        "[proxy.timers]\nt1_ms = 0\n\n[[proxy.route]]\nname = \"x\"\nreply = { status = 200 }\n",
    );
    let out = anchorage()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    assert_eq!(
        text,
        format!(
            "{p}: proxy.timers.t1_ms: must be greater than 0\n\
             {p}: proxy.route[0].reply.status: 200 is not a final SIP status (300-699)\n\
             {p}: 2 error(s)\n"
        )
    );
}

#[test]
fn an_unknown_option_fails_with_status_2_and_names_it() {
    let out = anchorage()
        .args(["relay", "--no-such-option"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("--no-such-option"), "{text}");
}

#[test]
fn callgen_has_its_own_help() {
    let out = anchorage().args(["callgen", "--help"]).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--max-gap-ms"), "{text}");
}
