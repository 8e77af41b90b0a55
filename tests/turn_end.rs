//! End of turn on a French corpus (espeak-ng, two voices, 8 kHz μ-law;
//! `support::turn_corpus`): with the end of turn read from the caller's
//! voice, a finished turn is ended ~200 ms after its last word and an
//! unfinished one (a pause after a rising "Ma box internet,", in a
//! dictated number, after "euh") is waited for; the fixed 500 ms hang-over
//! of before is measured beside it.

mod support;

use std::time::Duration;

use sav::media::vad::VadConfig;
use support::turn_corpus::{self, Figures};

fn line(name: &str, f: &Figures) -> String {
    let quick = f.latencies.iter().filter(|&&l| l < 400).count();
    format!(
        "{name}: finished turns {} (median {} ms, p90 {} ms after the last word, {quick} under 400 ms, {} missed or split), unfinished turns {} ({} cut into: {:.1} %)\n",
        f.finished,
        f.median(),
        f.p90(),
        f.finished_missed,
        f.unfinished,
        f.cut_ins,
        100.0 * f.cut_in_rate()
    )
}

#[test]
fn a_finished_turn_ends_in_250_ms_and_an_unfinished_one_is_waited_for() {
    support::require_tool("espeak-ng");
    support::require_tool("sox");
    let turns = turn_corpus::build();
    let finished = turns.iter().filter(|t| t.finished).count();
    let unfinished = turns.len() - finished;
    assert!(
        finished >= 40 && unfinished >= 20,
        "{finished} / {unfinished}"
    );
    // The corpus is what it says: each unfinished turn has its pause.
    for turn in turns.iter().filter(|t| !t.finished) {
        assert_eq!(
            turn.pauses.len(),
            1,
            "{} ({}): {:?}",
            turn.text,
            turn.voice,
            turn.pauses
        );
    }
    let fixed = turn_corpus::figures(&turns, &VadConfig::default());
    let adaptive = turn_corpus::figures(
        &turns,
        &VadConfig {
            end_of_turn: Some((Duration::from_millis(200), Duration::from_millis(1000))),
            ..VadConfig::default()
        },
    );
    let report = format!(
        "{}{}",
        line("end of turn, fixed 500 ms hang-over", &fixed),
        line(
            "end of turn, from the voice (200 ms finished / 1000 ms unfinished)",
            &adaptive
        )
    );
    print!("{report}");
    support::write_report("turn-end-report.txt", &report);
    // The measure sees the hang-over it is given.
    assert!(fixed.median() >= 450, "{report}");
    assert!(adaptive.median() <= 250, "{report}");
    assert!(adaptive.cut_in_rate() <= 0.02, "{report}");
    // No finished statement ended before its last word, or twice.
    assert_eq!(adaptive.finished_missed, 0, "{report}");
    // Most finished turns are heard as finished (the rest wait 1 s).
    let quick = adaptive.latencies.iter().filter(|&&l| l < 400).count();
    assert!(quick * 3 >= adaptive.finished * 2, "{report}");
}
