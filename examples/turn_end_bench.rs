//! End-of-turn benchmark (not a test): the French turn corpus of
//! `tests/support/turn_corpus.rs` (espeak-ng, two voices, 8 kHz through
//! μ-law; 84 finished turns, 44 unfinished ones with a 0.7–0.9 s pause)
//! through the VAD, with the fixed hang-over and with the end of turn read
//! from the voice at several settings: how long after a finished turn's
//! last word the VAD ends it, how many unfinished turns it cuts into.
//!
//!     cargo run --release --example turn_end_bench
//!
//! Needs espeak-ng and sox (the corpus is built once in target/turn-corpus/).

#[path = "../tests/support/turn_corpus.rs"]
mod turn_corpus;

use std::time::Duration;

use sav::media::vad::VadConfig;

fn main() {
    let turns = turn_corpus::build();
    let ms = Duration::from_millis;
    let mut settings = vec![
        ("fixed 500 ms".to_string(), VadConfig::default()),
        (
            "fixed 200 ms".to_string(),
            VadConfig {
                hangover: ms(200),
                ..VadConfig::default()
            },
        ),
    ];
    for (finished, unfinished) in [(200, 800), (200, 1000), (250, 1000), (200, 1200)] {
        settings.push((
            format!("voice {finished}/{unfinished} ms"),
            VadConfig {
                end_of_turn: Some((ms(finished), ms(unfinished))),
                ..VadConfig::default()
            },
        ));
    }
    println!("setting: finished turns → median / p90 ms after the last word (judged finished); unfinished turns cut into");
    for (name, config) in settings {
        let f = turn_corpus::figures(&turns, &config);
        let quick = f.latencies.iter().filter(|&&l| l < 400).count();
        println!(
            "{name:>20}: {} finished → {} / {} ms ({quick} ended under 400 ms, {} missed); {} of {} unfinished cut into ({:.1} %)",
            f.finished,
            f.median(),
            f.p90(),
            f.finished_missed,
            f.cut_ins,
            f.unfinished,
            100.0 * f.cut_in_rate()
        );
    }
}
