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
    fn same_rate_and_empty_input_pass_through() {
        assert_eq!(resample(&[1, 2, 3], 8000, 8000).unwrap(), vec![1, 2, 3]);
        assert!(resample(&[], 16_000, 8000).unwrap().is_empty());
    }
}
