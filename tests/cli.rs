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
fn check_warns_about_a_relay_exposed_with_learning_on_but_accepts_the_file() {
    let path = temp_file(
        "exposed.toml",
        "[relay]\nlisten_ng = \"10.0.0.21:2223\"\n\n[[relay.interface]]\naddress = \"203.0.113.21\"\n",
    );
    let out = anchorage()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown = path.display();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{shown}: ok\n")
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with(&format!(
            "{shown}: warning: relay.control_allow: listen_ng 10.0.0.21:2223 is not loopback"
        )),
        "{stderr}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "{shown}: warning: relay.interface[0].address: 203.0.113.21 is not loopback and endpoint learning is on"
        )),
        "{stderr}"
    );
    assert!(warnings[1].contains("strict-source"), "{stderr}");
    // Closed: control on a listed network, media on loopback: no warning.
    let path = temp_file(
        "closed.toml",
        "[relay]\nlisten_ng = \"10.0.0.21:2223\"\ncontrol_allow = [\"10.0.0.0/24\"]\n",
    );
    let out = anchorage()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
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
