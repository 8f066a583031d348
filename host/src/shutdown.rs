//! The shutdown trigger: SIGINT or SIGTERM (Ctrl-C on Windows) cancels one token that every
//! listener watches, so all of them stop accepting together and drain.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// Takes over SIGINT and SIGTERM now, before the future is first polled: plughost says it
/// listens only after this, so a signal sent as soon as it does is never the default action
/// (death with an empty log). The future cancels `token` when the process is asked to stop.
pub fn on_signal(token: CancellationToken) -> impl Future<Output = &'static str> {
    let signal = wait();
    async move {
        let name = signal.await;
        tracing::info!(
            signal = name,
            "shutting down: no new connections, finishing open requests"
        );
        token.cancel();
        name
    }
}

#[cfg(unix)]
fn wait() -> impl Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop plughost with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
fn wait() -> impl Future<Output = &'static str> {
    // tokio's Ctrl-C listener is in place once `ctrl_c` is first polled; Windows has no
    // default action racing it that loses the log.
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending().await,
        }
    }
}
