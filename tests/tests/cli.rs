//! The command line and the errors a user meets at start-up: one line naming the cause and
//! the fix, exit code 2 for configuration and 1 for listening.

use std::net::TcpListener;
use std::process::Command;

use plughost_e2e::{binary, run};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn with_config(text: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), text).unwrap();
    let mut args = vec!["--config", "bad.toml"];
    args.extend_from_slice(extra);
    run(dir.path(), &args)
}

#[test]
fn bad_config_stops_start_up_with_code_2_naming_key_and_line() {
    for (text, expected) in [
        (
            "port = 8080\nprot = 1\n",
            "bad.toml:2: prot: unknown key `prot`; did you mean `port`?",
        ),
        ("port = 70000\n", "bad.toml:1: port: "),
        (
            "\n\ncache_capacity = \"lots\"\n",
            "bad.toml:3: cache_capacity: ",
        ),
        (
            "max_concurrency = 0\n",
            "max_concurrency: must be at least 1, got 0",
        ),
        ("queue_timeout = \"soon\"\n", "bad.toml:1: queue_timeout: "),
        (
            "workers = 5000\n",
            "bad.toml:1: workers: must be at most 1024 (0 is one per core), got 5000",
        ),
    ] {
        let out = with_config(text, &[]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(expected), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    }
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--config", "nowhere.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nowhere.toml"), "{}", stderr(&out));
}

#[test]
fn config_prints_the_effective_configuration_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plughost.toml"),
        "port = 1234\ncache_capacity = 7\n",
    )
    .unwrap();
    let out = Command::new(binary())
        .current_dir(dir.path())
        .env("PLUGHOST_PORT", "4321")
        .args(["--log-file", "other.log", "config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("port = 4321"), "{text}");
    assert!(text.contains("cache_capacity = 7"), "{text}");
    assert!(text.contains("log_file = \"other.log\""), "{text}");
    assert!(text.contains("max_concurrency = 10"), "{text}");
}

#[test]
fn help_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(dir.path(), &["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--port",
        "--bind",
        "--admin",
        "--plugins-dir",
        "--log-file",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
    let version = run(dir.path(), &["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("plughost {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn port_in_use_names_the_address_and_how_to_find_its_owner() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--bind", "127.0.0.1", "--port", &port, "--admin", "off"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(
        err.contains(&format!("ss -ltnp 'sport = :{port}'")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn admin_port_in_use_is_reported_too() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--bind", "127.0.0.1", "--port", "0", "--admin", &addr],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
}

/// A port below 1024 without privileges. Tests run as root here, so the binary is started as
/// `nobody` through setpriv; as an ordinary user it is started directly.
#[test]
fn privileged_port_suggests_one_above_1024() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("p.log");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary());
        c
    } else {
        Command::new(binary())
    };
    let out = cmd
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "81",
            "--admin",
            "off",
            "--log-file",
        ])
        .arg(if root {
            "/dev/null".as_ref()
        } else {
            log.as_os_str()
        })
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("permission denied"), "{err}");
    assert!(err.contains("above 1024"), "{err}");
}

#[test]
fn the_packaged_example_config_names_every_key_and_uncommented_still_parses() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/plughost.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    // Every key of the effective config (tables included) appears in the example.
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--config", example.to_str().unwrap(), "config"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let effective = String::from_utf8_lossy(&out.stdout);
    for key in effective
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim()))
    {
        let documented = [
            format!("# {key} = "),
            format!("# [[{key}]]"),
            format!("# [{key}."),
        ];
        assert!(
            documented.iter().any(|d| text.contains(d.as_str())),
            "packaging/plughost.toml lacks `{key}`"
        );
    }
    // With every `# key = value` line uncommented it is a valid config.
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    // Grants are checked at load: point the example's at a directory that exists.
    let uncommented = uncommented.replace("/srv/data", &dir.path().display().to_string());
    std::fs::write(dir.path().join("all.toml"), uncommented).unwrap();
    let out = run(dir.path(), &["--config", "all.toml", "config"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_effective_config_never_prints_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plughost.toml"),
        "admin = \"0.0.0.0:9091\"\nadmin_token = \"hunter2-secret\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("admin_token = \"(redacted)\""), "{text}");
}

#[test]
fn a_bad_route_is_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plughost.toml"),
        "port = 8080\n\n[[routes]]\nprefix = \"/x\"\nplugin = \"nobody\"\n",
    )
    .unwrap();
    let out = run(dir.path(), &["config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("plughost.toml:5: routes.plugin: no plugin named `nobody`"),
        "{err}"
    );
}
