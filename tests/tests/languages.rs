//! Plugins in languages other than Rust, built from source in the test set-up, each answering
//! through the real server.

use plughost_e2e::{Plughost, python_plugin};

/// Python (componentize-py): a responder describing the request as JSON; its `host.log` call
/// reaches plughost's log.
#[tokio::test]
async fn python_responder_describes_the_request() {
    let config = format!(
        "[[plugins]]\nname = \"describe\"\nfile = {:?}\nkind = \"responder\"\nconfig = {{ pretty = true }}\n\
         [[routes]]\nprefix = \"/describe\"\nplugin = \"describe\"\n",
        python_plugin("describe").display().to_string()
    );
    let server = Plughost::start(&config);
    let resp = reqwest::Client::new()
        .post(server.url("/describe/me?x=1"))
        .header("x-lang", "py")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    assert!(text.contains("\n  \"method\""), "not pretty: {text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["plugin"], "describe (python)");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["uri"], "/describe/me?x=1");
    assert_eq!(json["headers"]["x-lang"], "py");
    assert_eq!(json["body_bytes"], 5);
    assert!(json["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    server.wait_log("describe (python) ready");
}
