//! Command line: run the demo, run a config, or check a config.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use crate::gateway::Gateway;
use crate::model::diff::{self, RunningConfig};
use crate::model::Balance;
use crate::model::Model;
use crate::router::Content;
use crate::server::{self, Server};
use crate::service_manager::ServiceManager;
use crate::snapshot::Snapshot;
use crate::tls::certs;
use crate::upstream::BackendPool;
use crate::{admin, config, demo, echo, reload};

/// sysexits.h EX_USAGE: the command line was wrong.
const EXIT_USAGE: u8 = 64;

/// wsgate: a reverse proxy and WebSocket gateway.
///
/// With no arguments, runs a self-contained demo on 127.0.0.1:8080.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run with this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a config file and print its listeners and routes.
    Check {
        /// The config file to check.
        file: PathBuf,
        /// Also compare it with the config a running wsgate serves (`GET
        /// /config` on its admin listener; by default the file's
        /// `admin.bind`): routes added, removed and changed, and how many
        /// live sessions a reload would close.
        #[arg(long, value_name = "ADMIN_ADDR", num_args = 0..=1, default_missing_value = "")]
        diff: Option<String>,
    },
    /// Run a plain WebSocket echo backend, for smoke tests.
    EchoServer {
        /// Address to listen on, e.g. 127.0.0.1:9001.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
}

/// Parses the arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // --help and --version are not errors.
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();
    match (cli.command, cli.config) {
        (Some(Command::Check { file, diff }), _) => check(&file, diff.as_deref()),
        (Some(Command::EchoServer { listen }), _) => exit_code(echo_server(listen)),
        (None, Some(path)) => match config::load(&path) {
            Ok(loaded) => {
                for line in loaded.warnings.to_string().lines() {
                    tracing::warn!("{line}");
                }
                exit_code(serve(loaded.model, Some(path), None))
            }
            Err(diagnostics) => {
                eprint!("{diagnostics}");
                ExitCode::FAILURE
            }
        },
        (None, None) => exit_code(demo()),
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wsgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(file: &Path, diff: Option<&str>) -> ExitCode {
    match config::load(file) {
        Ok(loaded) => {
            eprint!("{}", loaded.warnings);
            // Built as a reload would build it, so what cannot serve fails here.
            let snapshot = match Snapshot::build(loaded.model, None, None) {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    eprintln!("{}: {error}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            print!("{}", summary(&snapshot));
            let Some(admin) = diff else {
                return ExitCode::SUCCESS;
            };
            match running_config(admin, snapshot.model.admin) {
                Ok((admin, running)) => {
                    println!("\nchanges against the instance at {admin}:");
                    print!("{}", diff::describe(&snapshot.model, &running));
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("wsgate: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            ExitCode::FAILURE
        }
    }
}

/// Fetches `GET /config` from a running instance's admin listener: `given`,
/// or when that is empty the checked file's `admin.bind` (a wildcard
/// address is reached on loopback).
fn running_config(given: &str, bind: SocketAddr) -> anyhow::Result<(SocketAddr, RunningConfig)> {
    let admin = if given.is_empty() {
        let ip = match bind.ip() {
            ip if !ip.is_unspecified() => ip,
            IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        anyhow::ensure!(
            bind.port() != 0,
            "admin.bind has port 0; pass the running instance's admin address to --diff"
        );
        SocketAddr::new(ip, bind.port())
    } else {
        given
            .parse()
            .with_context(|| format!("--diff wants the admin address as IP:PORT, not `{given}`"))?
    };
    let body = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(get_config(admin))
        .with_context(|| format!("cannot read the running config from http://{admin}/config"))?;
    let running = serde_json::from_slice(&body)
        .context("the running instance answered /config with something else than its config")?;
    Ok((admin, running))
}

async fn get_config(admin: SocketAddr) -> anyhow::Result<Bytes> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get("/config")
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        Ok(response.into_body().collect().await?.to_bytes())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("no answer within 10s")?
}

/// `acme example.com,www.example.com http-01`, and what the state holds.
fn acme_summary(snapshot: &Snapshot, acme: &crate::model::Acme) -> String {
    let held = snapshot
        .acme
        .iter()
        .find(|managed| managed.settings == *acme)
        .and_then(|managed| managed.expires());
    let held = match held {
        Some(not_after) => format!("stored certificate until {}", certs::format_time(not_after)),
        None => "no certificate yet: ordered at startup".to_owned(),
    };
    format!(
        "acme {} {} ({held})",
        acme.domains.join(","),
        acme.challenge.as_str()
    )
}

/// The listeners and routes of a snapshot, as `check` prints them.
pub fn summary(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for (listener, model) in snapshot.listeners.iter().zip(&snapshot.model.listeners) {
        let acme = model.tls.as_ref().and_then(|tls| tls.acme.as_ref());
        let kind = match (&listener.tls, listener.redirect_https) {
            (Some(_), _) => match acme {
                Some(acme) => format!("tls, {}", acme_summary(snapshot, acme)),
                None => "tls".to_owned(),
            },
            (None, Some(port)) => format!("redirects to https port {port}"),
            (None, None) if listener.h2c => "plain, h2c".to_owned(),
            (None, None) => "plain".to_owned(),
        };
        let _ = writeln!(out, "listener  {}  {kind}", listener.bind);
    }
    let metrics = if snapshot.model.metrics {
        ""
    } else {
        "  metrics off"
    };
    let _ = writeln!(out, "admin     {}{metrics}", snapshot.model.admin);
    let _ = writeln!(
        out,
        "\n{:<16} {:<24} {:<20} ACTION",
        "ROUTE", "HOST", "PATH"
    );
    for route in snapshot.router.routes() {
        let mut actions = Vec::new();
        match &route.content {
            Some(Content::Static(dir)) => actions.push(format!("static {}", dir.root().display())),
            Some(Content::Embedded(_)) => actions.push("embedded page".to_owned()),
            Some(Content::Proxy(proxy)) => {
                let action = if proxy.settings.http2 {
                    "proxy (HTTP/2)"
                } else {
                    "proxy"
                };
                actions.push(pool_summary(action, &proxy.backends));
            }
            Some(Content::Redirect(redirect)) => actions.push(format!(
                "redirect {} {}",
                redirect.status.as_u16(),
                redirect.target()
            )),
            None => {}
        }
        if let Some(rewrite) = &route.rewrite {
            actions.push(rewrite.to_string());
        }
        if let Some(compress) = &route.compress {
            actions.push(compress.to_string());
        }
        if let Some(websocket) = &route.websocket {
            let action = if websocket.over_http2 {
                "websocket"
            } else {
                "websocket (HTTP/1.1 clients only)"
            };
            actions.push(pool_summary(action, &websocket.backends));
        }
        let action = actions.join("; ");
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<20} {action}",
            route.name,
            route.host.to_string(),
            route.prefix
        );
    }
    out
}

/// `proxy http://a:1 http://b:1 (hash cookie:sid, health /healthz)`.
fn pool_summary(action: &str, pool: &BackendPool) -> String {
    let backends: Vec<&str> = pool.backends().iter().map(|b| b.url.as_str()).collect();
    let mut notes = Vec::new();
    match &pool.balance {
        Balance::RoundRobin => {}
        Balance::LeastConnections => notes.push("least_connections".to_owned()),
        Balance::Hash(key) => notes.push(format!("hash {key}")),
    }
    if let Some(check) = &pool.health_check {
        notes.push(format!("health {}", check.path));
    }
    let mut summary = format!("{action} {}", backends.join(" "));
    if !notes.is_empty() {
        summary.push_str(&format!(" ({})", notes.join(", ")));
    }
    summary
}

fn demo() -> anyhow::Result<()> {
    let bind: SocketAddr = demo::DEMO_BIND.parse()?;
    let admin: SocketAddr = demo::DEMO_ADMIN_BIND.parse()?;
    // The echo backend listens on a loopback port of its own, so the demo
    // exercises the same gateway path as a real backend.
    let echo =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot start the demo echo backend")?;
    let echo_addr = echo.local_addr()?;
    println!("wsgate demo: open http://{bind}/ in a browser (metrics at http://{admin}/metrics)");
    serve(demo::model(bind, admin, echo_addr), None, Some(echo))
}

fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!(addr = %listener.local_addr()?, "echo server listening");
        tokio::select! {
            () = echo::serve(listener) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the server on `model`, reloading it from `config` (when there is
/// a file) on SIGHUP or a change; `echo` is the demo's in-process echo backend.
fn serve(
    model: Model,
    config: Option<PathBuf>,
    echo: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let result = runtime.block_on(async {
        if let Some(echo) = echo {
            echo.set_nonblocking(true)?;
            tokio::spawn(echo::serve(TcpListener::from_std(echo)?));
        }
        // Signal handlers come before the first bind: a client or a service
        // manager that sees a port open may signal at once, and an unhandled
        // SIGHUP or SIGTERM would end the process without a word.
        let shutdown = shutdown_signal()?;
        let reloads = reload::Triggers::install(config)?;
        let mut reopen = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
        server::fd_limit::raise(model.limits.max_connections);
        let mut listeners = Vec::new();
        for listener in &model.listeners {
            let bound = listen(listener.bind)?;
            tracing::info!(addr = %bound.local_addr()?, "listening");
            listeners.push(bound);
        }
        let admin = listen(model.admin)?;
        let admin_addr = admin.local_addr()?;
        let endpoints = if model.metrics {
            "/healthz, /readyz, /metrics, /config"
        } else {
            "/healthz, /readyz, /config"
        };
        tracing::info!(addr = %admin_addr, endpoints, "admin listening");
        for route in &model.routes {
            tracing::info!(route = %route.name, host = %route.host, path = %route.path, "route");
        }
        let gateway = Gateway::new(model)?;
        let server = Server::start(
            listeners,
            admin,
            admin::handler(&gateway),
            Arc::clone(&gateway),
        );
        let access_log = gateway.access_log().clone();
        let gateway_log = access_log.clone();
        tokio::spawn(async move {
            // logrotate's postrotate: the old file was renamed; write a new one.
            while reopen.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening the access log");
                access_log.reopen();
            }
        });
        let service = Arc::new(ServiceManager::from_env());
        service.ready(reload::SERVING);
        tokio::spawn(Arc::clone(&service).feed_watchdog());
        tokio::spawn(reloads.run(Arc::clone(&server), gateway, Arc::clone(&service)));
        shutdown.await;
        service.stopping();
        server.shutdown().await;
        // The last lines are still gathering in the log's queue.
        gateway_log.flush(Duration::from_secs(1));
        tracing::info!("stopped");
        anyhow::Ok(())
    });
    // Blocking-pool reads of files nobody will receive must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn listen(bind: SocketAddr) -> anyhow::Result<TcpListener> {
    server::bind(bind).with_context(|| format!("cannot listen on {bind}"))
}

/// Resolves at the first SIGTERM or SIGINT; a second one exits at once.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
            _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(1);
        });
    })
}
