//! The command line: `migrate`, `user create`, `demo`, and configuration errors.

use std::process::Command;

use crate::common::*;

fn spotter(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "SPOTTER_DATABASE_URL",
            format!("sqlite://{}", dir.join("cli.db").display()),
        )
        .env("SPOTTER_DATA_DIR", dir.join("data"))
        .envs(env.iter().copied())
        .output()
        .expect("run spotter")
}

#[test]
fn migrate_and_user_create() {
    let dir = tempfile::tempdir().unwrap();
    let out = spotter(dir.path(), &["migrate"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("cli.db").exists());
    // Running it again is a no-op.
    assert!(spotter(dir.path(), &["migrate"], &[]).status.success());

    let out = spotter(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "coach",
            "--password",
            PASSWORD,
            "--role",
            "trainer",
            "--display-name",
            "Coach Kim",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).expect("user JSON on stdout");
    assert!(user["id"].as_i64().unwrap() > 0);
    assert_eq!(user["username"], "coach");
    assert_eq!(user["role"], "trainer");
    assert_eq!(user["display_name"], "Coach Kim");

    // A taken username and a bad role fail with a message.
    let out = spotter(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "coach",
            "--password",
            PASSWORD,
            "--role",
            "trainer",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
    let out = spotter(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "x",
            "--password",
            PASSWORD,
            "--role",
            "boss",
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("role"));
}

#[test]
fn created_user_can_log_in() {
    let app = TestApp::sqlite();
    let db = app
        .env
        .iter()
        .find(|(k, _)| k == "SPOTTER_DATABASE_URL")
        .unwrap()
        .1
        .clone();
    let out = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args([
            "user",
            "create",
            "--username",
            "cli_member",
            "--password",
            PASSWORD,
            "--role",
            "member",
        ])
        .env("SPOTTER_DATABASE_URL", db)
        .env("SPOTTER_DATA_DIR", app.dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The running server did not see the insert in its directory cache; logging in loads it.
    let login = app.login("cli_member", PASSWORD);
    assert_eq!(app.get("/api/users/me", &login.token).0, 200);
}

#[test]
fn demo_loads_a_gym() {
    let dir = tempfile::tempdir().unwrap();
    let out = spotter(
        dir.path(),
        &["demo"],
        &[("SPOTTER_ADMIN_PASSWORD", ADMIN_PASSWORD)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for who in [
        "trainer.anna",
        "member.carla",
        "staff.gina",
        "device.turnstile1",
    ] {
        assert!(text.contains(who), "{text}");
    }
    // Idempotent.
    assert!(spotter(dir.path(), &["demo"], &[]).status.success());
}

#[test]
fn bad_configuration_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("SPOTTER_JWT_SECRET", "too-short"),
        ("SPOTTER_DATABASE_URL", "mysql://localhost/x"),
        ("SPOTTER_BIND", "not-an-address"),
        ("SPOTTER_HEARTBEAT_TIMEOUT_SECS", "soon"),
    ] {
        let out = spotter(dir.path(), &["serve"], &[(var, value)]);
        assert!(!out.status.success(), "{var}={value} must stop start-up");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    }
}
