//! The `sav` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use sav::cache::{self, PhraseCache};
use sav::config::Config;

#[derive(Parser)]
#[command(
    name = "sav",
    version,
    about = "After-sales phone support voicebot (SIP/RTP endpoint)"
)]
struct Cli {
    /// Configuration file; the repository's sav.toml (compiled in) when omitted.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer calls.
    Serve,
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
        /// Seconds on the line (default: the WAV's length + 2, or 10).
        #[arg(long)]
        duration: Option<f64>,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,rsipstack=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sav: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(sav::sip::server::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            uri,
            play,
            record,
            duration,
        } => {
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
            let request = sav::sip::outbound::CallRequest {
                target: uri,
                play,
                record,
                duration,
            };
            let summary = runtime.block_on(sav::sip::outbound::place_call(&config, request))?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Customers {
            action: CustomersAction::Import { file },
        } => {
            let input = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime.block_on(async {
                let store = sav::store::Store::open(
                    &config.store.url,
                    &config.base_dir,
                    &config.instance(),
                )
                .await?;
                anyhow::Ok(
                    sav::store::import::import_customers(
                        &store,
                        std::io::BufReader::new(input),
                        &config.store.country_code,
                    )
                    .await?,
                )
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
                ExitCode::from(2)
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
            Ok(ExitCode::FAILURE)
        }
        Command::CheckConfig => {
            if config.sip.transports.contains(&sav::config::Transport::Tls) {
                sav::sip::tls::load(&config.sip.tls)?;
            }
            let (cache, stale) = PhraseCache::load(&config.cache)?;
            println!("config ok");
            println!(
                "  sip listen   {} ({:?})",
                config.sip.listen, config.sip.transports
            );
            println!("  advertised   {}", config.advertised_ip());
            println!("  max calls    {}", config.sip.max_calls);
            println!(
                "  rtp ports    {}-{}, timeout {} s",
                config.media.rtp_port_min, config.media.rtp_port_max, config.media.rtp_timeout_secs
            );
            if config.sip.transports.contains(&sav::config::Transport::Tls) {
                sav::sip::tls::load(&config.sip.tls)?;
                println!(
                    "  tls          {} ({})",
                    config.tls_listen(),
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
