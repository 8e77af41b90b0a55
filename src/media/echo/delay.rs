//! The bulk delay of the line's echo: the caller's signal cross-correlated
//! with what was sent, both decimated to 2 kHz, and the filter's window
//! placed at the best delay.

use super::*;

impl EchoCanceller {
    /// Cross-correlates the last second of the caller's signal with what
    /// was sent, at 2 kHz and differenced (which flattens speech's
    /// spectrum, so the peak is sharp), for every delay up to MAX_DELAY;
    /// averages it into what earlier searches found; places the filter at
    /// the best delay when it is clear enough and far enough from where the
    /// filter is (the filter itself follows small changes).
    pub(super) fn search_delay(&mut self) {
        let end = self.near_low_end;
        if end < SEARCH_WINDOW as u64 + 1 {
            return;
        }
        let start = end - SEARCH_WINDOW as u64;
        SEARCH_SCRATCH.with_borrow_mut(|(near, far)| {
            self.search_signals(start, end, near, far);
            self.correlate(near, far);
        });
    }

    /// The search's two signals, differenced: the caller's decimated
    /// signal from `start` to `end`, and what was sent from MAX_DELAY
    /// before it on.
    fn search_signals(&self, start: u64, end: u64, near: &mut Vec<f32>, far: &mut Vec<f32>) {
        let near_at = |i: u64| {
            self.near_low[(i as usize) % SEARCH_WINDOW]
                - self.near_low[((i - 1) as usize) % SEARCH_WINDOW]
        };
        let far_low_end = self.far_end / DECIMATE as u64;
        let far_raw = |i: u64| -> f32 {
            if i >= far_low_end || far_low_end - i > FAR_DECIMATED as u64 {
                0.0
            } else {
                self.far_low[(i as usize) % FAR_DECIMATED]
            }
        };
        let far_at = |i: u64| far_raw(i) - i.checked_sub(1).map_or(0.0, far_raw);
        let lags = MAX_DELAY / DECIMATE;
        near.clear();
        near.extend((start + 1..end).map(near_at));
        far.clear();
        far.extend((0..near.len() + lags).map(|j| {
            (start + 1 + j as u64)
                .checked_sub(lags as u64)
                .map_or(0.0, far_at)
        }));
    }

    /// The search over `near` (the caller's window) and `far` (what was
    /// sent, from the longest delay before it on), both differenced.
    fn correlate(&mut self, near: &[f32], far: &[f32]) {
        let lags = MAX_DELAY / DECIMATE;
        let near_energy = dot(near, near);
        let far_energy_all = dot(far, far);
        if near_energy <= 1e-9 || far_energy_all <= 1e-9 {
            return;
        }
        let mut found_any = false;
        // far[lags - lag + i] is what was sent `lag` before near[i].
        let mut far_energy = dot(&far[lags..], &far[lags..]);
        for lag in 0..=lags {
            let shifted = &far[lags - lag..lags - lag + near.len()];
            if lag > 0 {
                // Slide the energy window one step back in time.
                let entering = far[lags - lag];
                let leaving = far[lags - lag + near.len()];
                far_energy += entering * entering - leaving * leaving;
            }
            let now = if far_energy > 1e-9 {
                found_any = true;
                dot(near, shifted).abs() / (near_energy * far_energy.max(1e-12)).sqrt()
            } else {
                0.0
            };
            let average = &mut self.correlation[lag];
            *average = if self.searched {
                *average + SEARCH_WEIGHT * (now - *average)
            } else {
                now
            };
        }
        if !found_any {
            return;
        }
        self.searched = true;
        let (lag, &best) = self
            .correlation
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        if best < MIN_CORRELATION {
            return;
        }
        let delay = lag * DECIMATE;
        let offset = delay.saturating_sub(LEAD);
        if self.stats.delay.is_none() || offset.abs_diff(self.offset) > LEAD / 2 {
            // A new place for the window: what was learnt is shifted with it.
            let shift = offset as isize - self.offset as isize;
            shift_taps(&mut self.foreground, shift);
            shift_taps(&mut self.background, shift);
            self.shares_stale = true;
            self.offset = offset;
        }
        self.stats.delay = Some(delay);
    }
}

thread_local! {
    /// The delay search's two signals, shared by the calls a thread serves
    /// (a search runs to its end on one thread; allocated once per thread,
    /// not per call or per search).
    static SEARCH_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = std::cell::RefCell::new((
        Vec::with_capacity(SEARCH_WINDOW),
        Vec::with_capacity(SEARCH_WINDOW + MAX_DELAY / DECIMATE),
    ));
}
