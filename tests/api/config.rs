//! Configuration: profiles, overrides, and bad values that stop start-up with the key named.

use std::process::Command;

use trellis::config::{LogFormat, Profile, Settings};

fn load(vars: &[(&str, &str)]) -> Result<Settings, String> {
    Settings::load(
        Profile::Embedded,
        None,
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn environment_variables_override_the_profile() {
    let s = load(&[
        ("TRELLIS__HTTP__PORT", "9123"),
        ("TRELLIS__LOG__FORMAT", "json"),
    ])
    .expect("valid");
    assert_eq!(s.http.port, 9123);
    assert_eq!(s.log.format, LogFormat::Json);
}

#[test]
fn the_test_profile_binds_any_free_port() {
    let s = Settings::load(Profile::Test, None, Vec::new()).expect("valid");
    assert_eq!(s.http.port, 0);
    assert_eq!(s.http.bridge_port, 0, "the bridges' listener too");
}

#[test]
fn bridges_get_a_listener_of_their_own_by_default_and_thread_settings_out_of_range_name_their_key()
{
    let s = load(&[]).expect("valid");
    assert!(s.http.bridge_listener);
    assert_eq!((s.http.port, s.http.bridge_port), (8080, 8081));
    assert_eq!(s.threads.api_nice, 5);
    assert!((1..=8).contains(&s.threads.trading()));
    for (key, value, named) in [
        ("TRELLIS__THREADS__API_NICE", "20", "threads.api_nice"),
        ("TRELLIS__THREADS__API_NICE", "-1", "threads.api_nice"),
        (
            "TRELLIS__THREADS__BRIDGE_THREADS",
            "0",
            "threads.bridge_threads",
        ),
        ("TRELLIS__HTTP__BRIDGE_PORT", "8080", "http.bridge_port"),
        (
            "TRELLIS__THREADS__TRADING_THREADS",
            "several",
            "threads.trading_threads",
        ),
    ] {
        let err = load(&[(key, value)]).expect_err("must fail");
        assert!(err.contains(named), "{key}={value}: {err}");
    }
}

#[test]
fn a_port_out_of_range_names_the_key() {
    let err = load(&[("TRELLIS__HTTP__PORT", "70000")]).expect_err("must fail");
    assert!(err.contains("http.port"), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_key() {
    let err = load(&[("TRELLIS__SUPERVISION__MAX_RESTARTS", "many")]).expect_err("must fail");
    assert!(err.contains("supervision.max_restarts"), "{err}");
}

#[test]
fn an_unknown_key_names_the_key_and_its_section() {
    let err = load(&[("TRELLIS__HTTP__PROT", "1")]).expect_err("must fail");
    assert!(err.contains("`prot`") && err.contains("http"), "{err}");
}

#[test]
fn an_unknown_log_format_names_the_key() {
    let err = load(&[("TRELLIS__LOG__FORMAT", "xml")]).expect_err("must fail");
    assert!(err.contains("log.format"), "{err}");
}

#[test]
fn an_unknown_profile_is_refused() {
    let err = Profile::parse("staging")
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("TRELLIS_ENV") && err.contains("staging"),
        "{err}"
    );
}

#[test]
fn serve_with_a_bad_value_exits_with_one_line_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("serve")
        .env("TRELLIS_ENV", "test")
        .env("TRELLIS__HTTP__PORT", "http")
        .output()
        .expect("trellis runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("http.port"), "{stderr}");
}

#[test]
fn help_describes_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("--help")
        .output()
        .expect("trellis runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for sub in ["serve", "check-config"] {
        assert!(help.contains(sub), "--help lacks {sub}: {help}");
    }
    let version = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("--version")
        .output()
        .expect("trellis runs");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}
