//! The `minidb` binary: `serve` (default), `config`, `dump`, `restore`, `import-minidbgo`,
//! `compact`, `verify`, `healthcheck`, `shell`, `keys`.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use minidb::config::{Config, Overrides};
use minidb::engine::{self, Engine};
use minidb::server::auth::keys::{self, Role};
use minidb::server::{self, AppState};
use minidb::shell;
use minidb::store::import::{self, ImportOptions, Phase, Summary};
use minidb::store::Store;
use minidb::telemetry::{lifecycle, LogFormat, Telemetry, TelemetryConfig};

#[derive(Parser)]
#[command(
    name = "minidb",
    version,
    about = "MiniDB: a document database on its own LSM engine"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Configuration file (default: config/minidb.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the REST API (the default).
    Serve {
        /// Address to listen on (overrides server.listen).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Print the effective configuration as TOML.
    Config,
    /// Write every document as JSON Lines (offline).
    Dump {
        /// Output file ("-" for stdout).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Load a dump (offline): MiniDB's JSON Lines (validates every line first), or
    /// MiniDBGo's dumpDB file with --format minidbgo (upserts, as MiniDBGo's restoreDB).
    Restore {
        /// The dump file.
        file: PathBuf,
        /// The dump's format.
        #[arg(long, value_enum, default_value_t = DumpFormat::Jsonl)]
        format: DumpFormat,
    },
    /// Import every live document of a MiniDBGo data directory (offline).
    /// Exit 0: all imported; 3: imported, some records skipped (listed); 1: failed.
    ImportMinidbgo {
        /// MiniDBGo's data directory (its DB_PATH: MANIFEST, sst/, wal/).
        dir: PathBuf,
        /// Import into a MiniDB that already holds documents, as upserts.
        #[arg(long)]
        force: bool,
        /// Read and check DIR and print the summary; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a full compaction (offline).
    Compact,
    /// Check every checksum of every table and WAL record, writing nothing (offline).
    /// Exit 0: intact; 3: intact with a warning (a torn WAL tail); 1: damaged.
    Verify,
    /// Save a backup of a running server (GET /api/_backup) to a file.
    Backup {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:6866")]
        url: String,
        /// Where to write the archive (written to FILE.part, then renamed).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "out_dir",
            required_unless_present = "out_dir"
        )]
        out: Option<PathBuf>,
        /// Write `minidb-<UTC time>.tar` into this directory instead (for a CronJob).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// With --out-dir: keep only the newest N backups there, removing older ones.
        #[arg(long, value_name = "N", requires = "out_dir")]
        keep: Option<usize>,
        /// Give up when the whole transfer takes longer than this.
        #[arg(long, default_value_t = 3600, value_name = "SECS")]
        timeout_secs: u64,
        /// API key (an admin key when auth is on), sent as `Authorization: Bearer KEY`.
        #[arg(
            long,
            env = "MINIDB_API_KEY",
            hide_env_values = true,
            value_name = "KEY"
        )]
        api_key: Option<String>,
        /// PEM CA certificate to trust for an https:// URL (besides the system's roots).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Unpack a backup archive into an empty data directory (--data-dir) and verify it.
    RestoreBackup {
        /// The archive written by `minidb backup`.
        file: PathBuf,
    },
    /// The interactive shell (MiniDBGo's commands) over a running server, or embedded on
    /// --data-dir. Exit 0: every command succeeded; 1: some failed, or no connection.
    Shell(ShellArgs),
    /// API keys for auth.keys_file.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Exit 0 if the server answers GET /api/health with 200, else 1.
    Healthcheck {
        /// Health URL.
        #[arg(long, default_value = "http://127.0.0.1:6866/api/health")]
        url: String,
    },
}

#[derive(Args)]
struct ShellArgs {
    /// The server's base URL (ignored with --data-dir, which opens the directory here).
    #[arg(long, default_value = "http://127.0.0.1:6866")]
    url: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "MINIDB_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// Run these commands (one per line) instead of a session.
    #[arg(short = 'c', long = "command", value_name = "COMMANDS")]
    commands: Option<String>,
    /// History file of interactive sessions (default ~/.minidb_history).
    #[arg(long, value_name = "FILE", conflicts_with = "no_history")]
    history: Option<PathBuf>,
    /// Keep no history.
    #[arg(long)]
    no_history: bool,
    /// No colours, even on a terminal (NO_COLOR does the same).
    #[arg(long)]
    no_color: bool,
    /// Most documents findMany and dumpAll print (0: all). Default: 1000 on a terminal,
    /// all otherwise.
    #[arg(long, value_name = "N")]
    max_results: Option<u64>,
    /// Per-request timeout over HTTP.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout_secs: u64,
}

/// `minidb keys ...`.
#[derive(Subcommand)]
enum KeysCmd {
    /// Make a new key: prints the key (once; the server keeps only its hash) and then the
    /// line to add to the keys file, each on its own line of stdout.
    Create {
        /// read (GET, search, count), write (plus writes) or admin (plus compact, backup,
        /// index management).
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
        /// Limit the key to these collections (comma-separated); default: all.
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        collections: Option<Vec<String>>,
        /// A name for the operator (logged on denials instead of the key).
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
}

/// Formats `minidb restore` reads.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DumpFormat {
    /// MiniDB's JSON Lines: one `{"collection": ..., "doc": ...}` per line.
    Jsonl,
    /// MiniDBGo's dumpDB file: `{"<collection>": [doc, ...], ...}`.
    Minidbgo,
}

/// `minidb verify`'s exit code when the data is intact but a warning was printed.
const VERIFY_WARNINGS: u8 = 3;
/// The importers' exit code when some records were skipped (the summary lists them).
const IMPORT_SKIPPED: u8 = 3;
/// The log format of `serve`, once its configuration is loaded.
static SERVE_LOG_FORMAT: OnceLock<LogFormat> = OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.cmd, None | Some(Cmd::Serve { .. }));
    match run(cli) {
        Ok(code) => code,
        Err(e) if serving => {
            // One JSON object in JSON mode, even before the log subscriber exists (a
            // configuration error): the format from the config, else the environment,
            // else JSON.
            let format = SERVE_LOG_FORMAT.get().copied().unwrap_or_else(|| {
                std::env::var("MINIDB_TELEMETRY__LOG_FORMAT")
                    .ok()
                    .and_then(|f| f.trim().parse().ok())
                    .unwrap_or_default()
            });
            lifecycle::fatal(&format!("{e:#}"), format);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("minidb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(common: &Common, listen: Option<String>) -> Result<Config> {
    let overrides = Overrides {
        config_file: common.config.clone(),
        listen,
        data_dir: common.data_dir.clone(),
    };
    Ok(Config::load(&overrides)?)
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd.unwrap_or(Cmd::Serve { listen: None }) {
        Cmd::Serve { listen } => {
            let config = load_config(&cli.common, listen)?;
            let _ = SERVE_LOG_FORMAT.set(config.telemetry.log_format.parse().unwrap_or_default());
            serve(config)?;
        }
        Cmd::Config => {
            let config = load_config(&cli.common, None)?;
            print!("{}", config.to_toml());
        }
        Cmd::Dump { out } => {
            let config = load_config(&cli.common, None)?;
            let store = open_offline(&config)?;
            let n = if out == Path::new("-") {
                let stdout = std::io::stdout();
                let mut w = BufWriter::new(stdout.lock());
                store.dump(&mut w, |_| {})?
            } else {
                let file = File::create(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                let mut w = BufWriter::new(file);
                let bar = progress_bar(None);
                let n = store.dump(&mut w, |n| bar.set_position(n))?;
                w.into_inner()
                    .map_err(|e| anyhow!("write {}: {e}", out.display()))?
                    .sync_all()
                    .with_context(|| format!("fsync {}", out.display()))?;
                bar.finish_and_clear();
                n
            };
            close(store)?;
            eprintln!("dumped {n} documents");
        }
        Cmd::Restore {
            file,
            format: DumpFormat::Minidbgo,
        } => {
            let config = load_config(&cli.common, None)?;
            let store = open_offline(&config)?;
            let mut bar = ImportBar::new();
            let result = import::restore_dump(&store, &file, &mut |p, n| bar.update(p, n));
            bar.finish();
            close(store)?;
            return import_done(result);
        }
        Cmd::ImportMinidbgo {
            dir,
            force,
            dry_run,
        } => {
            let config = load_config(&cli.common, None)?;
            if dry_run {
                let mut bar = ImportBar::new();
                let result = import::check_dir(&dir, &mut |n| bar.update(Phase::Checking, n));
                bar.finish();
                return import_done(result);
            }
            refuse_same_dir(&dir, &config.storage.data_dir)?;
            let store = open_offline(&config)?;
            let mut opts = ImportOptions::default();
            opts.force = force;
            let mut bar = ImportBar::new();
            let result = import::import_dir(&store, &dir, &opts, &mut |p, n| bar.update(p, n));
            bar.finish();
            close(store)?;
            return import_done(result);
        }
        Cmd::Restore { file, .. } => {
            let config = load_config(&cli.common, None)?;
            let open = || -> Result<BufReader<File>> {
                Ok(BufReader::new(File::open(&file).with_context(|| {
                    format!("cannot open {}", file.display())
                })?))
            };
            let total = Store::validate_dump(open()?)
                .with_context(|| format!("{} is not a valid dump", file.display()))?;
            let store = open_offline(&config)?;
            let bar = progress_bar(Some(total));
            let n = store.restore(open()?, |n| bar.set_position(n))?;
            bar.finish_and_clear();
            close(store)?;
            eprintln!("restored {n} documents");
        }
        Cmd::Compact => {
            let config = load_config(&cli.common, None)?;
            let store = open_offline(&config)?;
            store.engine().compact()?;
            close(store)?;
            eprintln!("compaction done");
        }
        Cmd::Verify => {
            let config = load_config(&cli.common, None)?;
            let dir = &config.storage.data_dir;
            // Read-only: no lock file is created, no torn tail is cut, nothing is replayed
            // into tables.
            match engine::verify_dir(dir, &config.engine_options()) {
                Ok(r) => {
                    println!(
                        "ok: {} tables ({} entries) and {} WAL segments ({} records) verified, \
                         every checksum good",
                        r.tables, r.table_entries, r.wal_segments, r.wal_records
                    );
                    if !r.torn_tails.is_empty() {
                        for (path, offset) in &r.torn_tails {
                            println!(
                                "warning: torn WAL tail in {} at offset {offset} (a crash \
                                 mid-write; the next open cuts it off, no acknowledged write is \
                                 in it)",
                                path.display()
                            );
                        }
                        return Ok(ExitCode::from(VERIFY_WARNINGS));
                    }
                }
                Err(engine::Error::Locked { dir }) => bail!(
                    "data directory {} is in use by a running minidb server; stop it first",
                    dir.display()
                ),
                Err(e) => {
                    println!("FAILED: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Cmd::Backup {
            url,
            out,
            out_dir,
            keep,
            timeout_secs,
            api_key,
            ca_cert,
        } => {
            let target = match (&out, &out_dir) {
                (Some(f), _) => f.clone(),
                (None, Some(d)) => d.join(format!("minidb-{}.tar", utc_stamp())),
                (None, None) => bail!("give --out FILE or --out-dir DIR"),
            };
            let auth = BackupAuth {
                api_key: api_key.as_deref(),
                ca_cert: ca_cert.as_deref(),
            };
            backup(&url, &target, Duration::from_secs(timeout_secs), &auth)?;
            if let (Some(dir), Some(n)) = (&out_dir, keep) {
                prune_backups(dir, n)?;
            }
        }
        Cmd::RestoreBackup { file } => {
            let config = load_config(&cli.common, None)?;
            let dir = config.storage.data_dir.clone();
            let archive =
                File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let bar = progress_bar(archive.metadata().ok().map(|m| m.len()));
            let report =
                server::backup::restore(BufReader::new(archive), &dir, |n| bar.set_position(n))
                    .with_context(|| {
                        format!("cannot restore {} into {}", file.display(), dir.display())
                    })?;
            bar.finish_and_clear();
            eprintln!(
                "restored sequence {} into {}: {} files, {} bytes; verified {} tables ({} entries), \
                 {} WAL records",
                report.meta.sequence,
                dir.display(),
                report.files,
                report.bytes,
                report.verified.tables,
                report.verified.table_entries,
                report.verified.wal_records
            );
        }
        Cmd::Shell(args) => return shell(&cli.common, args),
        Cmd::Keys {
            cmd:
                KeysCmd::Create {
                    role,
                    collections,
                    name,
                },
        } => {
            let k = keys::create(role, collections.as_deref(), name.as_deref())
                .map_err(|e| anyhow!("{e}"))?;
            eprintln!("The new API key (shown only now: the server stores only its hash):");
            println!("{}", k.key);
            eprintln!("Add this line to the keys file (auth.keys_file); the server picks it up:");
            println!("{}", k.line);
        }
        Cmd::Healthcheck { url } => {
            return Ok(match healthcheck(&url) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    ExitCode::FAILURE
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `minidb shell`: embedded with --data-dir, else over --url.
fn shell(common: &Common, args: ShellArgs) -> Result<ExitCode> {
    let target = if common.data_dir.is_some() {
        let config = load_config(common, None)?;
        shell::Target::DataDir {
            dir: config.storage.data_dir.clone(),
            options: config.engine_options(),
        }
    } else {
        shell::Target::Server {
            url: args.url,
            api_key: args.api_key.filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(args.timeout_secs.max(1)),
        }
    };
    let mut opts = shell::Options::new(target);
    opts.commands = args.commands;
    opts.no_color = args.no_color;
    opts.max_results = args.max_results;
    opts.history = match (args.no_history, args.history) {
        (true, _) => None,
        (false, Some(h)) => Some(h),
        (false, None) => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".minidb_history")),
    };
    let report = shell::run(opts)?;
    Ok(if report.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Opens the engine for an offline command, explaining a lock held by a running server.
fn open_offline(config: &Config) -> Result<Store> {
    let dir = &config.storage.data_dir;
    match Engine::open(dir, config.engine_options()) {
        Ok(engine) => Ok(Store::new(Arc::new(engine))),
        Err(engine::Error::Locked { dir }) => bail!(
            "data directory {} is in use by a running minidb server; stop it first \
             (or use the HTTP API)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open data directory {}", dir.display())),
    }
}

fn close(store: Store) -> Result<()> {
    store.engine().shutdown().context("engine shutdown")?;
    Ok(())
}

/// Prints an import's summary; the exit code says whether records were skipped.
fn import_done(result: import::Result<Summary>) -> Result<ExitCode> {
    match result {
        Ok(summary) => {
            print!("{summary}");
            Ok(if summary.skipped_total() > 0 {
                ExitCode::from(IMPORT_SKIPPED)
            } else {
                ExitCode::SUCCESS
            })
        }
        // The source is read completely before the first write.
        Err(e) if e.is_damaged() => Err(anyhow!("{e}; nothing was imported")),
        Err(e) => Err(e.into()),
    }
}

/// Importing a directory into itself would read MiniDB's files as MiniDBGo's.
fn refuse_same_dir(source: &Path, target: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (source.canonicalize(), target.canonicalize()) {
        if a == b {
            bail!(
                "{} is both the MiniDBGo source and the MiniDB data directory; give MiniDB \
                 another one with --data-dir",
                source.display()
            );
        }
    }
    Ok(())
}

/// The progress of an import on a terminal: a spinner while checking, a bar while writing.
struct ImportBar {
    bar: indicatif::ProgressBar,
    phase: Option<Phase>,
}

impl ImportBar {
    fn new() -> Self {
        ImportBar {
            bar: progress_bar(None),
            phase: None,
        }
    }

    fn update(&mut self, phase: Phase, n: u64) {
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            let template = match phase {
                Phase::Importing { total } => {
                    self.bar.set_length(total);
                    "importing {bar:40} {pos}/{len} records ({eta})"
                }
                _ => "{spinner} checking the source (nothing is written yet): {pos} records",
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                self.bar.set_style(style);
            }
        }
        self.bar.set_position(n);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn progress_bar(len: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    }
}

/// Starts logs, traces, metrics and the memory governor (inside the runtime: the OTLP
/// exporter may need it).
fn init_telemetry(config: &Config) -> Result<Telemetry> {
    let t = &config.telemetry;
    Telemetry::init(TelemetryConfig {
        memory_limit_bytes: config.memory.limit(),
        log_level: t.log_level.clone(),
        log_format: t.log_format.parse().unwrap_or_default(),
        otlp_endpoint: t.otlp_endpoint.clone(),
        service_name: t.service_name.clone(),
        data_dir: Some(config.storage.data_dir.clone()),
        access_log: t.access_log,
        ..TelemetryConfig::default()
    })
    .context("cannot start telemetry")
}

fn serve(config: Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("minidb-http")
        .build()
        .context("start the tokio runtime")?;
    let telemetry = {
        let _enter = rt.enter();
        init_telemetry(&config)?
    };
    lifecycle::log_panics();
    let dir = config.storage.data_dir.clone();
    // Durably (each new directory's parent fsynced): the engine does the same, but the
    // disk gauges read the directory before the engine has opened it.
    engine::storage::create_dir_all_durable(&engine::storage::StdFs, &dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    // Memtables and block cache: the configured sizes, capped by the memory plan.
    let mut opts = config.engine_options();
    let plan = telemetry.memory_plan();
    opts.memtable_bytes = opts.memtable_bytes.min(plan.memtable_bytes).max(4096);
    opts.block_cache_bytes = opts.block_cache_bytes.min(plan.block_cache_bytes);
    opts.memory_budget = Some(telemetry.memory_budget());
    let auth = server::auth::Auth::load(&config.auth)?;
    let tls = server::tls::Tls::load(&config.tls)?;
    let t = telemetry.clone();
    let served = rt.block_on(async move {
        // Listen first: while the engine opens (and replays its WAL), the probes answer and
        // every other route gets 503 + Retry-After, so a recovering pod looks recovering
        // (not ready), not dead.
        let listener = server::bind(&config)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let addr = listener.local_addr().context("local address")?;
        lifecycle::listening(addr);
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            auth = auth.is_some(),
            data_dir = %config.storage.data_dir.display(),
            "minidb listening"
        );
        let state = AppState::starting_with(config, Some(t.clone()), auth, tls);
        opts.listener = Some(state.startup.listener(Some(t.engine_listener())));
        let failed = Arc::new(tokio::sync::Notify::new());
        let opener = tokio::spawn(open_engine(dir, opts, state.clone(), t, failed.clone()));
        let shutdown = async move {
            tokio::select! {
                () = server::shutdown_signal() => {}
                () = failed.notified() => {}
            }
        };
        server::serve(listener, state, shutdown)
            .await
            .context("engine shutdown")?;
        // A failed open is the exit status; an open still running is abandoned (the next
        // start replays again).
        if opener.is_finished() {
            if let Ok(Err(e)) = opener.await {
                return Err(e);
            }
        }
        lifecycle::shut_down();
        Ok::<(), anyhow::Error>(())
    });
    telemetry.shutdown();
    rt.shutdown_timeout(Duration::from_secs(1));
    served
}

/// Opens the engine on a blocking thread and hands the store to the server. A failure is
/// logged and ends the server (exit status 1): a process that cannot open its data would
/// otherwise stay unready forever, and Kubernetes restarts a process that exits.
async fn open_engine(
    dir: PathBuf,
    opts: engine::Options,
    state: Arc<AppState>,
    telemetry: Telemetry,
    failed: Arc<tokio::sync::Notify>,
) -> Result<()> {
    let opened = tokio::task::spawn_blocking(move || {
        let display = dir.display().to_string();
        match Engine::open(&dir, opts) {
            Ok(e) => {
                // Under the engine's lock, so no other process streams from them.
                server::backup::clear_scratch(&dir);
                Ok(e)
            }
            Err(engine::Error::Locked { dir }) => Err(anyhow!(
                "data directory {} is locked by another minidb process",
                dir.display()
            )),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot open {display}"))),
        }
    })
    .await
    .map_err(|e| anyhow!("engine open task failed: {e}"))
    .and_then(|r| r);
    let engine = match opened {
        Ok(e) => Arc::new(e),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot open the engine; exiting");
            failed.notify_one();
            return Err(e);
        }
    };
    telemetry.attach_engine(engine.clone());
    let store = Arc::new(Store::new(engine));
    // `minidb_collection_documents`: the exact counts, read from the statistics keys.
    let counted = store.clone();
    telemetry
        .metrics()
        .set_collection_docs_source(Box::new(move || match counted.collections() {
            Ok(list) => list.into_iter().map(|c| (c.name, c.doc_count)).collect(),
            Err(_) => Vec::new(),
        }));
    if let Err(store) = state.open(store) {
        // Shutdown began while the engine opened: close it here.
        let _ = tokio::task::spawn_blocking(move || store.engine().shutdown()).await;
        return Ok(());
    }
    tracing::info!("minidb serving");
    Ok(())
}

/// How `minidb backup` reaches a server with API keys or TLS on.
struct BackupAuth<'a> {
    api_key: Option<&'a str>,
    ca_cert: Option<&'a Path>,
}

/// `minidb backup`: streams GET /api/_backup to `out`, durably.
fn backup(url: &str, out: &Path, timeout: Duration, auth: &BackupAuth<'_>) -> Result<()> {
    let mut builder = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout);
    if let Some(ca) = auth.ca_cert {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().context("cannot build the HTTP client")?;
    let endpoint = format!("{}/api/_backup", url.trim_end_matches('/'));
    let mut req = client.get(&endpoint);
    if let Some(key) = auth.api_key {
        req = req.bearer_auth(key);
    }
    let mut resp = req.send().with_context(|| format!("GET {endpoint}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("GET {endpoint} answered {status}: {msg}");
    }
    let sequence = resp
        .headers()
        .get("x-minidb-backup-sequence")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    let part = out.with_extension("part");
    let file = File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let bar = progress_bar(None);
    let mut w = BufWriter::new(file);
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = resp.read(&mut buf).with_context(|| {
            format!("the backup stream from {endpoint} broke after {total} bytes")
        })?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])
            .with_context(|| format!("write {}", part.display()))?;
        total += n as u64;
        bar.set_position(total);
    }
    let file = w
        .into_inner()
        .map_err(|e| anyhow!("write {}: {e}", part.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync {}", part.display()))?;
    drop(file);
    // A stream cut short by the server (an error after the headers) is not a tar archive
    // with an end marker: check the archive before it takes the final name.
    check_archive(&part)?;
    std::fs::rename(&part, out).with_context(|| format!("rename to {}", out.display()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsync {}", parent.display()))?;
    }
    bar.finish_and_clear();
    eprintln!(
        "backup of sequence {sequence} saved to {} ({total} bytes)",
        out.display()
    );
    Ok(())
}

/// Now as `YYYYMMDDTHHMMSSZ` (UTC), for backup file names that sort by time.
fn utc_stamp() -> String {
    utc_stamp_at(minidb::utc::now_secs())
}

fn utc_stamp_at(secs: u64) -> String {
    let c = minidb::utc::civil(secs);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Keeps the newest `keep` `minidb-*.tar` files in `dir` (names sort by time).
fn prune_backups(dir: &Path, keep: usize) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("minidb-") && n.ends_with(".tar"))
        })
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        std::fs::remove_file(old).with_context(|| format!("remove {}", old.display()))?;
        eprintln!("removed old backup {}", old.display());
    }
    Ok(())
}

/// Reads a downloaded archive through: it must list BACKUP.json and a MANIFEST.
fn check_archive(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut ar = tar::Archive::new(BufReader::new(f));
    let mut names = Vec::new();
    for e in ar
        .entries()
        .with_context(|| format!("{} is not a tar archive", path.display()))?
    {
        let mut e = e.with_context(|| format!("{} is damaged or incomplete", path.display()))?;
        names.push(e.path().map(|p| p.into_owned()).unwrap_or_default());
        std::io::copy(&mut e, &mut std::io::sink())
            .with_context(|| format!("{} is damaged or incomplete", path.display()))?;
    }
    for want in ["BACKUP.json", "MANIFEST"] {
        if !names.iter().any(|n| n == Path::new(want)) {
            bail!("{} is incomplete: no {want}", path.display());
        }
    }
    Ok(())
}

/// A tiny HTTP/1.0 GET: Ok if the status is 200.
fn healthcheck(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs are supported: {url}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolve {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("no address for {hostport}"))?;
    let timeout = Duration::from_secs(3);
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n")?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        bail!("GET {url} answered {:?}", line.lines().next().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::utc_stamp_at;

    #[test]
    fn backup_names_carry_the_utc_time() {
        assert_eq!(utc_stamp_at(0), "19700101T000000Z");
        assert_eq!(utc_stamp_at(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp_at(1_796_083_199), "20261130T235959Z");
        assert_eq!(utc_stamp_at(4_107_542_400), "21000301T000000Z");
    }
}
