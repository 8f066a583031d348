//! `hostile`: a plugin that misbehaves on purpose, for plughost's sandbox tests. Its config's
//! `mode` picks the misbehaviour; a responder answers with what it managed to do.
use plughost_plugin_sdk::{Action, Plugin, Request, Response, config, export_plugin, next};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    #[serde(default)]
    path: String,
    /// MiB for `alloc`, milliseconds for `busy`.
    #[serde(default)]
    amount: u64,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)] // the point: recursion until the stack runs out
fn recurse(n: u64) -> u64 {
    let pad = [n; 64];
    std::hint::black_box(&pad);
    recurse(n + 1) + pad[3]
}

fn outcome<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Action {
    let text = match r {
        Ok(_) => format!("LEAKED: {what} succeeded\n"),
        Err(e) => format!("denied: {e}\n"),
    };
    Response::text(200, text).into_action()
}

impl Plugin for Hostile {
    fn init(json: &str) -> Result<(), String> {
        let c: Config = config(json)?;
        if c.mode == "init-fail" {
            return Err("refusing to start: init-fail mode".into());
        }
        CONFIG.get_or_init(|| c);
        Ok(())
    }

    fn process(req: Request) -> Result<Action, String> {
        let c = CONFIG.get().ok_or("not initialised")?;
        match c.mode.as_str() {
            "loop" => loop {
                std::hint::black_box(&req);
            },
            "membomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recursion" => Ok(Response::text(200, format!("{}", recurse(0))).into_action()),
            "panic" => panic!("hostile plugin panics on purpose"),
            // Allocates `amount` MiB once and answers: fits or not, depending on the cap.
            "alloc" => {
                let block = vec![7u8; (c.amount as usize) << 20];
                Ok(Response::text(200, format!("allocated {} MiB\n", block.len() >> 20)).into_action())
            }
            // Burns `amount` ms of CPU, then answers.
            "busy" => {
                let start = std::time::Instant::now();
                while start.elapsed().as_millis() < c.amount as u128 {
                    std::hint::black_box(&req);
                }
                Ok(Response::text(200, "done\n").into_action())
            }
            "error" => Err("hostile plugin returns an error".into()),
            "read" => Ok(outcome("read", std::fs::read_to_string(&c.path))),
            "write" => Ok(outcome("write", std::fs::write(&c.path, b"pwned"))),
            "big-body" => Ok(Response::text(200, "x".repeat(100 << 20)).into_action()),
            "print" => {
                println!("hostile says hello on stdout");
                eprintln!("hostile says hello on stderr");
                Ok(next())
            }
            // Fails one request in ten (by a request counter), for fault tests.
            "every-tenth" => {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                if N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10 == 9 {
                    panic!("tenth request");
                }
                Ok(next())
            }
            // Traps on the requests whose target asks for it, for fault tests under load.
            "trap-if-asked" => {
                if req.uri.contains("trap") {
                    panic!("trap requested by {}", req.uri);
                }
                Ok(next())
            }
            other => Err(format!("unknown mode {other}")),
        }
    }
}

export_plugin!(Hostile);
