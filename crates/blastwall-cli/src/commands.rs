//! One module per subcommand.

pub(crate) mod backup;
pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod env;
pub(crate) mod init;
pub(crate) mod log;
pub(crate) mod scan;
pub(crate) mod serve;
pub(crate) mod token;
pub(crate) mod upstream;
pub(crate) mod vault;
pub(crate) mod wall;

/// Waits for Ctrl-C or SIGTERM: when a server (`serve`, `vault serve`) starts draining.
pub(crate) async fn shutdown_requested() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // No SIGTERM handler: Ctrl-C still stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
