//! `cybertriage serve`: the HTTP classification API.
//!
//! The listener opens first, so that /health responds while the model loads; /ready turns 200
//! once the model is loaded and warmed up. A failed load stops the process with an error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::config::Options;
use crate::http::{logging, AppState};
use crate::model::base::{fetch_base, BaseInfo, BaseSource, PinnedBase};
use crate::triage::classifier::Classifier;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub options: Options,
}

pub fn run(models_dir: &Path, args: Args) -> Result<ExitCode> {
    let config = args.options.resolve(models_dir)?;
    if !logging::init(config.log_format) {
        tracing::warn!("logging was set up before `serve` started: --log-format has no effect");
    }
    logging::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(serve(models_dir.to_path_buf(), config));
    // A model still loading when a signal came is abandoned rather than waited for.
    runtime.shutdown_background();
    outcome
}

async fn serve(models_dir: PathBuf, config: crate::http::config::ServeConfig) -> Result<ExitCode> {
    let state = AppState::new(config.service);
    let listener =
        TcpListener::bind(config.addr).await.with_context(|| format!("failed to listen on {}", config.addr))?;
    tracing::info!(addr = %listener.local_addr()?, "listening; /ready returns 503 until the model is loaded");

    // Carries a load failure to the shutdown future, so that the server stops.
    let (failed_tx, mut failed_rx) = watch::channel(false);
    let loader = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = load(&models_dir, &config.model_dir, &state);
            if outcome.is_err() {
                let _ = failed_tx.send(true);
            }
            outcome
        })
    };
    let load_failed = async move {
        // After a successful load the sender is dropped, which must not stop the server.
        if failed_rx.wait_for(|failed| *failed).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutdown requested: finishing the requests in flight"),
            () = load_failed => {}
        }
    };
    crate::http::serve(listener, state.clone(), shutdown).await.context("the HTTP server failed")?;

    let engine_state = state.clone();
    tokio::task::spawn_blocking(move || engine_state.engine().close()).await?;
    if loader.is_finished() {
        loader.await?.context("failed to load the model")?;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Fetches the base encoder when missing, loads the classifier and starts the model workers.
fn load(models_dir: &Path, model_dir: &Path, state: &AppState) -> Result<()> {
    let started = Instant::now();
    let base_dir = PinnedBase::load()?.output_dir(models_dir);
    match BaseInfo::read(&base_dir) {
        Ok(info) => {
            tracing::info!(
                dir = %base_dir.display(),
                source = %info.source,
                checksum = info.checksum_prefix(),
                "base encoder found on disk"
            );
        }
        Err(_) => {
            tracing::info!(dir = %base_dir.display(), "base encoder missing: fetching it as `cybertriage fetch-base` does");
            fetch_base(models_dir, &BaseSource::Pinned, false)?;
        }
    }
    tracing::info!(model_dir = %model_dir.display(), "loading the classifier");
    let classifier = Classifier::load(models_dir, model_dir)?;
    state.start(Arc::new(classifier)).context("the model failed its warm-up")?;
    state.metrics().model_loaded(started.elapsed());
    let model = state.model().map(|m| format!("{} {}", m.name, m.version)).unwrap_or_default();
    tracing::info!(model, load_seconds = started.elapsed().as_secs_f64(), "model loaded and warmed up: ready");
    Ok(())
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
