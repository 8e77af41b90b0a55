//! The `sav` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use sav::cache::{self, PhraseCache};
use sav::config::Config;

#[derive(Parser)]
#[command(
    name = "sav",
    version,
    about = "After-sales phone support voicebot (SIP/RTP endpoint)"
)]
struct Cli {
    /// Configuration file (relative paths in it are taken from its
    /// directory); the repository's sav.toml, compiled in, when neither this
    /// nor SAV_CONFIG is given.
    #[arg(long, short, global = true, env = "SAV_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer calls.
    Serve,
    /// Print the shell completion script for SHELL (e.g. `sav completions
    /// bash > /etc/bash_completion.d/sav`).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff: `sav man | man -l -`), or write one page
    /// per command into DIR (sav.1, sav-serve.1…).
    Man {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print an argon2 hash of the password read from standard input (one
    /// line), for [[console.users]] password_hash.
    HashPassword,
    /// Manage the phrase cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Manage the customers in the store.
    Customers {
        #[command(subcommand)]
        action: CustomersAction,
    },
    /// Validate the configuration and print what it says.
    CheckConfig,
    /// Remove the recordings, transcripts and timelines older than
    /// `[retention]` says (what `sav serve` also does once a day).
    Purge {
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Draw a call's timeline (lanes for caller, bot and providers, dead air
    /// in red) as an SVG, and a PNG when rsvg-convert or ImageMagick is
    /// installed.
    Report {
        /// The call: its record id or its SIP Call-ID.
        call: String,
        /// Where to write the SVG (default: <call>.svg here).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Print the timeline's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Place a call (through the outbound proxy when [sip.register] sets
    /// one), play a WAV as the caller's voice, record what answers, and print
    /// a summary.
    Call {
        /// Who to call, e.g. sip:sav@127.0.0.1:5060
        uri: String,
        /// A 16-bit WAV to say (any rate; converted to 8 kHz).
        #[arg(long)]
        play: Option<PathBuf>,
        /// Where to write what the callee says (8 kHz 16-bit WAV).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Seconds on the line (default: the WAV's length + 2, or 10; 120
        /// with --say or --dtmf turns), or until the callee hangs up.
        #[arg(long)]
        duration: Option<f64>,
        /// WAVs to say as the caller's turns, repeated in order: each once
        /// the callee has spoken and then been quiet for 1.2 s (after the
        /// greeting, after each prompt).
        #[arg(long)]
        say: Vec<PathBuf>,
        /// Keys to press (RFC 4733), e.g. 1,1,1, as turns like --say's
        /// (after them when both are given).
        #[arg(long, value_delimiter = ',', value_parser = parse_key)]
        dtmf: Vec<char>,
        /// A codec to offer (PCMA, PCMU, G722, opus), repeated in order of preference
        /// (default: `[media] codecs`).
        #[arg(long = "codec")]
        codecs: Vec<sav::media::codec::Codec>,
    },
}

#[derive(Subcommand)]
enum CustomersAction {
    /// Load customers and open tickets from a CSV with a header row: phone,
    /// first_name, last_name, and optionally title, product, problem. Bad rows
    /// are reported with their line numbers and skipped; good rows are kept.
    Import { file: PathBuf },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Synthesise missing or changed phrases (espeak-ng), leave the others alone.
    Build,
    /// Fail when a phrase has no audio or stale audio.
    Check,
}

/// With the `heap-profile` feature every allocation goes through dhat, which
/// writes `dhat-heap.json` (what was live at the peak, by call stack) in the
/// working directory when `main` returns.
#[cfg(feature = "heap-profile")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Exit codes: 0 done; 1 an error (nothing or not all of it could be
/// done: a bad configuration, a store that does not answer…); 2 a usage
/// error (clap's); [`INCOMPLETE`] the command ran to its end and found or
/// left something to fix (rows skipped by an import, phrases `cache check`
/// finds missing or stale).
const INCOMPLETE: u8 = 3;

fn main() -> ExitCode {
    #[cfg(feature = "heap-profile")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = Cli::parse();
    // What only the command line itself says: no configuration needed.
    match &cli.command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "sav", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::HashPassword => {
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() || password.trim().is_empty() {
                eprintln!("sav: no password on standard input");
                return ExitCode::FAILURE;
            }
            let password = password.trim_end_matches(['\r', '\n']);
            return match sav::console::auth::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("sav: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Man { out } => {
            return match write_manual(out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("sav: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    // The configuration says how to log; until it is read, errors go to
    // stderr as text.
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sav: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // Calls are traced by the process that serves them.
    let traces = match &cli.command {
        Command::Serve => match sav::app::traces::Traces::start(&config.traces) {
            Ok(traces) => traces,
            Err(error) => {
                eprintln!("sav: {error}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let (_traces, tracer) = traces.unzip();
    sav::app::log::init(&config.log, tracer);
    match run(cli, config) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sav: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` on the configured store, on a runtime of its own (the
/// one-shot commands).
fn on_store<T, F, Fut>(config: &Config, work: F) -> Result<T>
where
    F: FnOnce(sav::store::Store) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store =
            sav::store::Store::open(&config.store.url, &config.base_dir, &config.instance())
                .await?;
        work(store).await
    })
}

/// The manual: sav's page on stdout, or every command's page into `out`.
fn write_manual(out: Option<&std::path::Path>) -> Result<()> {
    let command = Cli::command();
    match out {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .context("cannot write the manual page"),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .with_context(|| format!("cannot write the manual pages into {}", dir.display()))
        }
    }
}

fn run(cli: Cli, config: Config) -> Result<ExitCode> {
    match cli.command {
        // Carried out in main, before any configuration is read.
        Command::Completions { .. } | Command::Man { .. } | Command::HashPassword => {
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            match &cli.config {
                Some(path) => tracing::info!(config = %path.display(), "configuration"),
                None => tracing::warn!(
                    "no --config and no SAV_CONFIG: running the embedded default configuration \
                     (keys only; relative paths such as the cache and sqlite://sav.db taken from \
                     the working directory)"
                ),
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(sav::app::serve(config, cli.config.clone()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            uri,
            play,
            record,
            duration,
            say,
            dtmf,
            codecs,
        } => {
            let codecs = if codecs.is_empty() {
                config.media.codec_choice()?
            } else {
                sav::media::codec::CodecChoice {
                    allowed: codecs,
                    order: sav::media::codec::CodecOrder::Ours,
                }
            };
            let duration = match duration {
                Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
                    Some(std::time::Duration::from_secs_f64(s))
                }
                Some(s) => anyhow::bail!("--duration {s}: expected seconds between 0 and 86400"),
                None => None,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let request = sav::call::outbound::CallRequest {
                target: uri,
                play,
                record,
                duration,
                turns: say
                    .into_iter()
                    .map(sav::call::outbound::CallerTurn::Say)
                    .chain(dtmf.into_iter().map(sav::call::outbound::CallerTurn::Key))
                    .collect(),
                codecs,
            };
            let summary =
                runtime.block_on(sav::call::outbound::place_call(&config.sip, request))?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { call, out, json } => {
            let wanted = call.clone();
            let found = on_store(&config, |store| async move {
                Ok(store.call_timeline(&wanted).await?)
            })?;
            let Some((id, timeline)) = found else {
                anyhow::bail!("no call {call:?} in the store ({})", config.store.url);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&timeline)?);
                return Ok(ExitCode::SUCCESS);
            }
            let svg_path = out.unwrap_or_else(|| PathBuf::from(format!("{}.svg", file_name(&id))));
            std::fs::write(&svg_path, sav::timeline::report::svg(&timeline))
                .with_context(|| format!("cannot write {}", svg_path.display()))?;
            println!("{}", svg_path.display());
            match to_png(&svg_path) {
                Some(png) => println!("{}", png.display()),
                None => eprintln!("no SVG converter (rsvg-convert, convert): SVG only"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers {
            action: CustomersAction::Import { file },
        } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let country = config.store.country_code.clone();
            let report = on_store(&config, |store| async move {
                let input = std::io::BufReader::new(input);
                Ok(sav::store::import::import_customers(&store, input, &country).await?)
            })?;
            for (line, why) in &report.rejected {
                println!("{}:{line}: skipped: {why}", file.display());
            }
            println!(
                "{} rows: {} customers imported, {} new tickets, {} rows skipped",
                report.rows,
                report.customers,
                report.tickets,
                report.rejected.len()
            );
            Ok(if report.rejected.is_empty() {
                ExitCode::SUCCESS
            } else {
                // Done, but not all of it: scripts should notice.
                ExitCode::from(INCOMPLETE)
            })
        }
        Command::Cache {
            action: CacheAction::Build,
        } => {
            let report = cache::build(&config.cache)?;
            for (key, reason) in &report.built {
                println!("built     {key} ({reason})");
            }
            for key in &report.unchanged {
                println!("unchanged {key}");
            }
            for key in &report.removed {
                println!("removed   {key} (no longer in the phrase table)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache {
            action: CacheAction::Check,
        } => {
            if let Err(missing) = cache::require_dir(&config.cache) {
                // Nothing built there yet: one line with the cause, not
                // "no audio" for every phrase.
                println!("{missing}");
                return Ok(ExitCode::from(INCOMPLETE));
            }
            let problems = cache::check(&config.cache)?;
            if problems.is_empty() {
                println!(
                    "cache ok: {} phrases in {}",
                    config.cache.phrases.len(),
                    config.cache.dir.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            for (key, problem) in &problems {
                println!("{key}: {problem}");
            }
            println!("{} phrase(s) need `sav cache build`", problems.len());
            Ok(ExitCode::from(INCOMPLETE))
        }
        Command::Purge { dry_run } => {
            if !config.retention.is_set() {
                println!("no [retention]: everything is kept");
                return Ok(ExitCode::SUCCESS);
            }
            let recordings = config.recordings_dir();
            let retention = config.retention.clone();
            let purged = on_store(&config, |store| async move {
                let now = sav::store::now_ms();
                Ok(store
                    .purge(&retention, recordings.as_deref(), now, dry_run)
                    .await?)
            })?;
            for path in &purged.recordings {
                println!("recording {}", path.display());
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            println!("{verb}: {purged}");
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            if config.sip.transports.contains(&sav::config::Transport::Tls) {
                sav::sip::tls::load(&config.sip.tls)?;
            }
            let (cache, stale) = PhraseCache::load(&config.cache)?;
            match &cli.config {
                Some(path) => println!("config ok: {}", path.display()),
                None => println!(
                    "config ok: the embedded default (no --config, no SAV_CONFIG; relative \
                     paths from the working directory)"
                ),
            }
            if let Some(path) = &cli.config {
                for warning in secrets_exposed(path, &config) {
                    println!("  warning      {warning}");
                }
            }
            if config.recordings_dir().is_some() && config.call.disclosure.is_none() {
                println!(
                    "  warning      calls are recorded ([operations] recordings_dir) and no \
                     [call] disclosure tells the caller so"
                );
            }
            println!(
                "  sip listen   {} ({:?})",
                config.sip.listen, config.sip.transports
            );
            println!("  advertised   {}", config.sip.advertised_ip());
            println!("  max calls    {}", config.sip.max_calls);
            println!(
                "  metrics      {}",
                if config.metrics.enabled {
                    format!("http://{}/metrics", config.metrics.listen)
                } else {
                    "off".into()
                }
            );
            println!("  store        {}", redact_password(&config.store.url));
            println!(
                "  console      {}",
                match config.console.listen {
                    Some(addr) => format!("http://{addr}/ ({} users)", config.console.users.len()),
                    None => "off".into(),
                }
            );
            println!(
                "  traces       {}",
                config
                    .traces
                    .traces_url()
                    .map_or("off".into(), |url| format!(
                        "OTLP/HTTP to {}",
                        redact_password(&url)
                    ))
            );
            println!(
                "  drain        {} s; recordings {}",
                config.operations.drain_secs,
                config
                    .operations
                    .recordings_dir
                    .as_ref()
                    .map_or("off".into(), |d| d.display().to_string())
            );
            println!(
                "  rtp ports    {}-{}, timeout {} s",
                config.media.rtp_port_min, config.media.rtp_port_max, config.media.rtp_timeout_secs
            );
            if config.sip.transports.contains(&sav::config::Transport::Tls) {
                sav::sip::tls::load(&config.sip.tls)?;
                println!(
                    "  tls          {} ({})",
                    config.sip.tls_listen(),
                    config.sip.tls.cert.display()
                );
            }
            println!(
                "  cache        {} phrases, {} bytes, in {}",
                cache.len(),
                cache.audio_bytes(),
                config.cache.dir.display()
            );
            for (key, problem) in stale {
                println!("  warning      {key}: {problem}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One key of `--dtmf`: 0-9, *, #, A-D.
fn parse_key(text: &str) -> Result<char, String> {
    let mut chars = text.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(key), None) if sav::media::dtmf::event_to_digit_code(key).is_some() => {
            Ok(key.to_ascii_uppercase())
        }
        _ => Err(format!("{text:?} is not a key (0-9, *, #, A-D)")),
    }
}

/// A name safe for a file from a call id.
fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Converts the SVG to a PNG beside it with the first converter found.
fn to_png(svg: &std::path::Path) -> Option<PathBuf> {
    let png = svg.with_extension("png");
    let tries: [(&str, Vec<std::ffi::OsString>); 2] = [
        (
            "rsvg-convert",
            vec!["-o".into(), png.clone().into(), svg.into()],
        ),
        ("convert", vec![svg.into(), png.clone().into()]),
    ];
    for (tool, args) in tries {
        let status = std::process::Command::new(tool)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if matches!(status, Ok(s) if s.success()) {
            return Some(png);
        }
    }
    None
}

/// Secrets the configuration file holds while every user may read it.
fn secrets_exposed(path: &std::path::Path, config: &Config) -> Vec<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return Vec::new();
        };
        if meta.permissions().mode() & 0o004 == 0 {
            return Vec::new();
        }
        let mut held = Vec::new();
        let store = &config.store;
        let url_in_file = store.url_env.is_none() && store.url_file.is_none();
        if url_in_file && redact_password(&store.url) != store.url {
            held.push("the [store] url's password");
        }
        let crm = &config.crm;
        let hook_in_file = crm.webhook_url_env.is_none() && crm.webhook_url_file.is_none();
        if hook_in_file
            && crm
                .webhook_url
                .as_deref()
                .is_some_and(|url| url.contains('?') || redact_password(url) != url)
        {
            held.push("a token in [crm] webhook_url");
        }
        held.into_iter()
            .map(|secret| {
                format!(
                    "{} holds {secret} and every user may read it: chmod o-r it, or move the secret out of it",
                    path.display()
                )
            })
            .collect()
    }
    #[cfg(not(unix))]
    {
        let _ = (path, config);
        Vec::new()
    }
}

/// A store URL with its password (if any) hidden, for printing.
fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
