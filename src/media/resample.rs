//! Sample-rate conversion to and from the 8 kHz the line carries, with rubato.

use rubato::{FftFixedIn, Resampler};

/// The telephone rate everything internal runs at.
pub const LINE_RATE: u32 = 8000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResampleError {
    #[error("cannot build a {from} Hz → {to} Hz resampler: {source}")]
    Construction {
        from: u32,
        to: u32,
        source: rubato::ResamplerConstructionError,
    },
    #[error("resampling failed: {0}")]
    Process(#[from] rubato::ResampleError),
}

/// Converts a whole mono buffer from `from` Hz to `to` Hz (offline use:
/// phrase synthesis). The output is aligned with the input (the filter delay
/// is removed) and holds `ceil(len × to / from)` samples.
pub fn resample(input: &[i16], from: u32, to: u32) -> Result<Vec<i16>, ResampleError> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let mut resampler = FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1)
        .map_err(|source| ResampleError::Construction { from, to, source })?;
    let samples: Vec<f32> = input.iter().map(|&s| f32::from(s) / 32768.0).collect();
    let expected = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let delay = resampler.output_delay();
    let mut out: Vec<f32> = Vec::with_capacity(expected + delay + 2048);
    let mut position = 0;
    while position + resampler.input_frames_next() <= samples.len() {
        let take = resampler.input_frames_next();
        let chunk = resampler.process(&[&samples[position..position + take]], None)?;
        out.extend_from_slice(&chunk[0]);
        position += take;
    }
    let chunk = resampler.process_partial(Some(&[&samples[position..]]), None)?;
    out.extend_from_slice(&chunk[0]);
    // Flush the filter delay; bounded: each call yields a whole chunk.
    for _ in 0..8 {
        if out.len() >= delay + expected {
            break;
        }
        let chunk = resampler.process_partial::<&[f32]>(None, None)?;
        out.extend_from_slice(&chunk[0]);
    }
    let end = (delay + expected).min(out.len());
    Ok(out[delay.min(end)..end]
        .iter()
        .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Incremental conversion for streamed audio (TTS chunks): samples in as
/// they arrive, converted samples out as soon as a block is complete.
pub struct StreamResampler {
    resampler: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    /// Output samples still to drop: the filter's delay at the start.
    skip: usize,
    /// Samples put in and taken out, to flush exactly the right length.
    input_count: u64,
    output_count: u64,
    from: u32,
    to: u32,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let resampler = if from == to {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1)
                    .map_err(|source| ResampleError::Construction { from, to, source })?,
            )
        };
        let skip = resampler.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            resampler,
            pending: Vec::new(),
            skip,
            input_count: 0,
            output_count: 0,
            from,
            to,
        })
    }

    /// Adds samples; returns what can be converted now.
    pub fn push(&mut self, samples: &[i16]) -> Result<Vec<i16>, ResampleError> {
        self.input_count += samples.len() as u64;
        let Some(resampler) = self.resampler.as_mut() else {
            self.output_count += samples.len() as u64;
            return Ok(samples.to_vec());
        };
        self.pending
            .extend(samples.iter().map(|&s| f32::from(s) / 32768.0));
        let mut out = Vec::new();
        while self.pending.len() >= resampler.input_frames_next() {
            let take = resampler.input_frames_next();
            let chunk = resampler.process(&[&self.pending[..take]], None)?;
            self.pending.drain(..take);
            out.extend_from_slice(&chunk[0]);
        }
        Ok(self.emit(out))
    }

    /// Flushes the rest at the end of the stream.
    pub fn finish(&mut self) -> Result<Vec<i16>, ResampleError> {
        let Some(resampler) = self.resampler.as_mut() else {
            return Ok(Vec::new());
        };
        let expected = (self.input_count * u64::from(self.to)).div_ceil(u64::from(self.from));
        let mut out = Vec::new();
        let chunk = resampler.process_partial(Some(&[&self.pending[..]]), None)?;
        self.pending.clear();
        out.extend_from_slice(&chunk[0]);
        for _ in 0..8 {
            let have = self.output_count + (out.len().saturating_sub(self.skip)) as u64;
            if have >= expected {
                break;
            }
            let chunk = resampler.process_partial::<&[f32]>(None, None)?;
            out.extend_from_slice(&chunk[0]);
        }
        let mut converted = self.emit(out);
        let total = self.output_count;
        if total > expected {
            converted.truncate(converted.len().saturating_sub((total - expected) as usize));
            self.output_count = expected;
        }
        Ok(converted)
    }

    fn emit(&mut self, out: Vec<f32>) -> Vec<i16> {
        let drop = self.skip.min(out.len());
        self.skip -= drop;
        let converted: Vec<i16> = out[drop..]
            .iter()
            .map(|&s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        self.output_count += converted.len() as u64;
        converted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, seconds: f32, amplitude: f32) -> Vec<i16> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                (amplitude * (2.0 * std::f32::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn zero_crossings(s: &[i16]) -> usize {
        s.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count()
    }

    #[test]
    fn espeak_rate_to_line_rate_keeps_pitch_length_and_level() {
        let input = sine(22_050, 1000.0, 1.0, 10_000.0);
        let out = resample(&input, 22_050, LINE_RATE).unwrap();
        assert_eq!(out.len(), 8000);
        // 1 kHz for one second: ~2000 zero crossings.
        let crossings = zero_crossings(&out[400..7600]) as f32 / 0.9;
        assert!((crossings - 2000.0).abs() < 20.0, "{crossings}");
        let peak = out[400..7600]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((9_000..=11_000).contains(&peak), "{peak}");
    }

    #[test]
    fn content_above_line_nyquist_is_filtered_out() {
        let input = sine(22_050, 6000.0, 0.5, 10_000.0);
        let out = resample(&input, 22_050, LINE_RATE).unwrap();
        let peak = out[400..3600]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!(
            peak < 500,
            "6 kHz must not alias into the 4 kHz band: {peak}"
        );
    }

    #[test]
    fn streaming_matches_the_whole_buffer_conversion() {
        let input = sine(24_000, 440.0, 0.7, 8000.0);
        let whole = resample(&input, 24_000, LINE_RATE).unwrap();
        let mut r = StreamResampler::new(24_000, LINE_RATE).unwrap();
        let mut streamed = Vec::new();
        for piece in input.chunks(333) {
            streamed.extend(r.push(piece).unwrap());
        }
        streamed.extend(r.finish().unwrap());
        assert_eq!(streamed.len(), whole.len());
        let max_diff = streamed
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).unsigned_abs())
            .max()
            .unwrap();
        assert!(max_diff < 300, "{max_diff}");
    }

    #[test]
    fn same_rate_and_empty_input_pass_through() {
        assert_eq!(resample(&[1, 2, 3], 8000, 8000).unwrap(), vec![1, 2, 3]);
        assert!(resample(&[], 16_000, 8000).unwrap().is_empty());
    }
}
