//! wasi:config: a plugin reads its `config` table and the secrets granted to it, and nothing
//! else; secrets come from a file or an environment variable, never from plughost.toml, are
//! shown nowhere (config, /plugins, the log), are read again on reload, and one that cannot
//! be read stops start-up naming it. The `introspect` example authenticates with one.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use plughost_e2e::backend::TestBackend;
use std::time::Duration;

use plughost_e2e::{Plughost, eventually, fails_to_start, fails_to_start_in, plugin, run};

const SECRET: &str = "s3cret-v1";

/// Writes `value` into `dir/name` readable by its owner only.
fn secret_file(dir: &Path, name: &str, value: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// The hostile plugin in `config` mode on `/c`, granted `secrets`, with two secrets declared:
/// `tok` from `file`, `path` from the environment variable PATH.
fn config_plugin(file: &str, secrets: &[&str]) -> String {
    format!(
        "[[plugins]]\nname = \"c\"\nfile = {:?}\nkind = \"responder\"\nsecrets = {secrets:?}\n\
         config = {{ mode = \"config\", greeting = \"hi\", n = 3, list = [1, 2], on = true }}\n\
         [[routes]]\nprefix = \"/c\"\nplugin = \"c\"\n\
         [secrets.tok]\nfile = {file:?}\n[secrets.path]\nenv = \"PATH\"\n",
        plugin("hostile").display().to_string()
    )
}

async fn read(server: &Plughost, key: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(server.url("/c"));
    if let Some(key) = key {
        req = req.header("x-key", key);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_plugin_reads_its_config_and_granted_secrets_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "tok", SECRET, 0o600);
    let server = Plughost::start_in(dir, &config_plugin(&file, &["tok"]));
    for (key, want) in [
        ("greeting", "value=hi".to_string()),
        ("n", "value=3".into()),
        ("list", "value=[1,2]".into()),
        ("on", "value=true".into()),
        ("tok", format!("value={SECRET}")),
        ("nope", "none".into()),
        (
            "path",
            "error: secret `path` is not granted to this plugin; add it to its secrets = [...]"
                .into(),
        ),
    ] {
        assert_eq!(read(&server, Some(key)).await.trim_end(), want, "{key}");
    }
    let all = read(&server, None).await;
    assert_eq!(
        all,
        format!("greeting=hi\nlist=[1,2]\nmode=config\nn=3\non=true\ntok={SECRET}\n")
    );
    // Its grants are listed by name; the value is nowhere but in the plugin's answers.
    let plugins = server.admin_json("/plugins").await;
    assert_eq!(plugins[0]["secrets"], serde_json::json!(["tok"]));
    assert!(!plugins.to_string().contains(SECRET));
    let path = server.dir.path().join("plughost.toml");
    let printed = run(
        server.dir.path(),
        &["--config", path.to_str().unwrap(), "config"],
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("[secrets.tok]"), "{printed}");
    assert!(!printed.contains(SECRET), "{printed}");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("plughost_config_reads_total{op=\"get\",outcome=\"denied\"} 1"),
        "{metrics}"
    );
    assert!(!server.log().contains(SECRET));
}

#[tokio::test]
async fn what_a_read_hands_back_is_bounded_by_max_answer_bytes() {
    let big = "v".repeat(4096);
    let config = format!(
        "[[plugins]]\nname = \"c\"\nfile = {:?}\nkind = \"responder\"\nmax_answer_bytes = 1024\n\
         config = {{ mode = \"config\", big = \"{big}\", small = \"s\" }}\n\
         [[routes]]\nprefix = \"/c\"\nplugin = \"c\"\n",
        plugin("hostile").display().to_string()
    );
    let server = Plughost::start(&config);
    assert_eq!(read(&server, Some("small")).await, "value=s\n");
    for key in [Some("big"), None] {
        let refused = read(&server, key).await;
        assert!(
            refused.starts_with("error: the answer would be over")
                && refused.contains("max_answer_bytes (1024)"),
            "{key:?}: {refused}"
        );
    }
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("plughost_config_reads_total{op=\"get-all\",outcome=\"too_large\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reload_reads_secrets_again_and_keeps_them_when_one_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "tok", SECRET, 0o600);
    let config = config_plugin(&file, &["tok"]);
    let server = Plughost::start_in(dir, &config);
    assert_eq!(
        read(&server, Some("tok")).await,
        format!("value={SECRET}\n")
    );
    // Rotated on disk: SIGHUP hands the running plugin (not reloaded) the new value.
    secret_file(server.dir.path(), "tok", "s3cret-v2", 0o600);
    server.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the rotated secret",
        async || match read(&server, Some("tok")).await.as_str() {
            "value=s3cret-v2\n" => Ok(()),
            other => Err(other.to_owned()),
        },
    )
    .await;
    let log = server.wait_log("reload done");
    assert!(log.contains("unchanged=1"), "{log}");
    // Opened to others: the reload is refused whole and the value stays.
    secret_file(server.dir.path(), "tok", "s3cret-v3", 0o644);
    let report = server.reload().await;
    let why = report["config_error"].as_str().unwrap_or_default();
    assert!(
        why.contains("secret `tok`") && why.contains("chmod o-r"),
        "{report}"
    );
    assert_eq!(read(&server, Some("tok")).await, "value=s3cret-v2\n");
}

#[test]
fn a_secret_that_cannot_be_read_stops_start_up_naming_it() {
    let unset = "[secrets.key]\nenv = \"PLUGHOST_TEST_UNSET_SECRET\"\n";
    let (status, err) = fails_to_start(unset);
    assert!(!status.success());
    assert!(
        err.contains("secret `key`: environment variable PLUGHOST_TEST_UNSET_SECRET is not set"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "open", "x", 0o644);
    let (status, err) = fails_to_start_in(dir, &format!("[secrets.open]\nfile = {file:?}\n"));
    assert!(!status.success());
    assert!(
        err.contains("secret `open`")
            && err.contains("is readable by others (mode 644; chmod o-r it)"),
        "{err}"
    );
}

/// The introspection endpoint learns who asks from the secret, read through wasi:config.
#[tokio::test]
async fn introspect_authenticates_with_a_secret_it_reads_through_wasi_config() {
    let auth = TestBackend::start("auth");
    let app = TestBackend::start("app");
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "idp", "s3cret", 0o600);
    let config = format!(
        "[[plugins]]\nname = \"introspect\"\nfile = {:?}\nsecrets = [\"idp\"]\nallowed_outbound = [\"http://{auth}\"]\n\
         config = {{ endpoint = \"http://{auth}/introspect\", client_id = \"introspect\", client_secret = \"idp\" }}\n\
         [secrets.idp]\nfile = {file:?}\n[upstreams.app]\nservers = [\"{app}\"]\n[[routes]]\nprefix = \"/api\"\nupstream = \"app\"\n",
        plugin("introspect").display().to_string(),
        auth = auth.addr,
        app = app.addr,
    );
    let server = Plughost::start_in(dir, &config);
    let ok = reqwest::Client::new()
        .get(server.url("/api/x"))
        .header("authorization", "Bearer good-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // base64("introspect:s3cret")
    let seen = auth.seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"authorization: Basic aW50cm9zcGVjdDpzM2NyZXQ=".to_string()),
        "{seen:?}"
    );
    // Not granted: the plugin does not load, and says why.
    let ungranted = config.replace("secrets = [\"idp\"]\n", "");
    let dir = tempfile::tempdir().unwrap();
    secret_file(dir.path(), "idp", "s3cret", 0o600);
    let ungranted = ungranted.replace(&file, &dir.path().join("idp").display().to_string());
    let (status, err) = fails_to_start_in(dir, &ungranted);
    assert!(!status.success());
    assert!(err.contains("secret `idp` is not granted"), "{err}");
}

/// A Python component built against the `plugin-sdk` world (it imports both key-value
/// versions and wasi:config) reads its settings and counts by compare-and-swap, next to the
/// Python `visits` plugin counting by draft's `increment` in the same bucket.
#[tokio::test]
async fn a_python_component_reads_settings_and_counts_by_compare_and_swap() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "tok", SECRET, 0o600);
    let config = format!(
        "[[plugins]]\nname = \"settings\"\nfile = {:?}\nkind = \"responder\"\nkeyvalue = [\"visits\"]\nsecrets = [\"tok\"]\ntimeout = \"2s\"\nconfig = {{ greeting = \"hi\" }}\n\
         [[plugins]]\nname = \"visits\"\nfile = {:?}\nkind = \"responder\"\nkeyvalue = [\"visits\"]\ntimeout = \"2s\"\n\
         [[routes]]\nprefix = \"/s\"\nplugin = \"settings\"\n[[routes]]\nprefix = \"/v\"\nplugin = \"visits\"\n\
         [keyvalue.visits]\n[secrets.tok]\nfile = {file:?}\n",
        plughost_e2e::python_plugin("settings")
            .display()
            .to_string(),
        plughost_e2e::python_plugin("visits").display().to_string(),
    );
    let server = Plughost::start_in(dir, &config);
    let client = reqwest::Client::new();
    let get = |path: &str, key: &str| client.get(server.url(path)).header("x-key", key).send();
    let text = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    assert_eq!(
        text(get("/s/p", "greeting").await.unwrap()).await,
        "visits: 1\nvalue=hi\n"
    );
    assert_eq!(
        text(get("/s/p", "tok").await.unwrap()).await,
        format!("visits: 2\nvalue={SECRET}\n")
    );
    assert_eq!(
        text(get("/s/p", "nope").await.unwrap()).await,
        "visits: 3\nnone\n"
    );
    // The Python plugin beside it still counts by draft's `increment`.
    let visits = reqwest::get(server.url("/v/page")).await.unwrap();
    assert_eq!(text(visits).await, "/v/page visited 1 times\n");
}
