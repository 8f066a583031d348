//! The shutdown trigger: SIGINT or SIGTERM (Ctrl-C on Windows) cancels one token that every
//! listener watches, so all of them stop accepting together and drain.

use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process is asked to stop; returns the signal's name.
pub async fn on_signal(token: CancellationToken) -> &'static str {
    let name = wait().await;
    tracing::info!(
        signal = name,
        "shutting down: no new connections, finishing open requests"
    );
    token.cancel();
    name
}

#[cfg(unix)]
async fn wait() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop plughost with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "Ctrl-C",
        Err(_) => std::future::pending().await,
    }
}
