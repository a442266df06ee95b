//! Audio as the real-client tests check it: a tone written to a WAV file for a phone to send,
//! and the recording a phone made read back and measured (RMS level and dominant frequency).
//!
//! Only 16-bit PCM WAV is handled, which is what the phones are given and what they record.
//! A recording of a process that was killed may carry chunk sizes that were never updated
//! (0, or the size of an empty file): the `data` chunk is then read to the end of the file.

use std::path::Path;

/// Decoded 16-bit PCM: the first channel's samples and the sample rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Samples per second.
    pub rate: u32,
    /// The samples of the first channel.
    pub samples: Vec<i16>,
}

impl Pcm {
    /// Seconds of audio held.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.rate.max(1))
    }

    /// The samples from `from` seconds on (empty past the end).
    pub fn after(&self, from: f64) -> &[i16] {
        let start = (from.max(0.0) * f64::from(self.rate)) as usize;
        self.samples.get(start..).unwrap_or(&[])
    }
}

/// Writes a mono 16-bit WAV of a sine tone of `hz` at `rate` samples per second, `seconds`
/// long, with amplitude `amplitude` (of 32,767).
pub fn write_tone(
    path: &Path,
    hz: f64,
    rate: u32,
    seconds: u32,
    amplitude: i16,
) -> std::io::Result<()> {
    let count = rate as usize * seconds as usize;
    let mut data = Vec::with_capacity(count * 2);
    for i in 0..count {
        let t = i as f64 / f64::from(rate);
        let v = (f64::from(amplitude) * (2.0 * std::f64::consts::PI * hz * t).sin()).round();
        data.extend_from_slice(&(v as i16).to_le_bytes());
    }
    std::fs::write(path, wav_bytes(rate, 1, &data))
}

/// A RIFF/WAVE file of 16-bit PCM `data` (little-endian, interleaved `channels`).
pub fn wav_bytes(rate: u32, channels: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + data.len());
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX - 36);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads a 16-bit PCM WAV file (see [`parse_wav`]).
pub fn read_wav(path: &Path) -> Result<Pcm, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_wav(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a 16-bit PCM WAV: the `fmt ` chunk gives rate and channels; the `data` chunk is
/// read for its declared size, or to the end of the input when that size is 0 or larger
/// than what is there (a recording whose writer never closed it).
pub fn parse_wav(bytes: &[u8]) -> Result<Pcm, String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let le16 = |b: &[u8], at: usize| b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let le32 = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = le32(bytes, at + 4).unwrap_or(0) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let (Some(tag), Some(channels), Some(rate), Some(bits)) = (
                le16(bytes, body),
                le16(bytes, body + 2),
                le32(bytes, body + 4),
                le16(bytes, body + 14),
            ) else {
                return Err("a truncated fmt chunk".into());
            };
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or("a data chunk before fmt")?;
            // 1 = PCM; 0xFFFE = WAVE_FORMAT_EXTENSIBLE (libsndfile writes it for some inputs).
            if !(tag == 1 || tag == 0xfffe) || bits != 16 || channels == 0 {
                return Err(format!(
                    "not 16-bit PCM (format {tag:#x}, {bits} bits, {channels} channels)"
                ));
            }
            let available = bytes.len() - body;
            let len = if size == 0 || size > available {
                available
            } else {
                size
            };
            let frame = usize::from(channels) * 2;
            let samples = bytes[body..body + len]
                .chunks_exact(frame)
                .map(|f| i16::from_le_bytes([f[0], f[1]]))
                .collect();
            return Ok(Pcm { rate, samples });
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk".into())
}

/// The root mean square of `samples` (0 for none), in sample units (full scale 32,767).
pub fn rms(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len() as f64).sqrt()
}

/// The power of `samples` at `hz` (Goertzel's algorithm), normalised by the sample count.
pub fn power_at(samples: &[i16], rate: u32, hz: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power / (samples.len() as f64 * samples.len() as f64)
}

/// The frequency (a multiple of 10 Hz between 50 Hz and the Nyquist frequency) where
/// `samples` hold the most power; at most the first two seconds are scanned.
pub fn dominant_frequency(samples: &[i16], rate: u32) -> f64 {
    let window = &samples[..samples.len().min(rate as usize * 2)];
    let nyquist = rate / 2;
    let mut best = (0.0, f64::MIN);
    let mut hz = 50;
    while hz < nyquist {
        let p = power_at(window, rate, f64::from(hz));
        if p > best.1 {
            best = (f64::from(hz), p);
        }
        hz += 10;
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_tone_reads_back_with_its_level_and_frequency() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        write_tone(&path, 700.0, 8000, 2, 8000).unwrap();
        let pcm = read_wav(&path).unwrap();
        assert_eq!((pcm.rate, pcm.samples.len()), (8000, 16000));
        // A sine's RMS is its amplitude over √2.
        let level = rms(&pcm.samples);
        assert!((level - 8000.0 / 2f64.sqrt()).abs() < 20.0, "{level}");
        assert_eq!(dominant_frequency(&pcm.samples, 8000), 700.0);
        assert_eq!(pcm.after(1.5).len(), 4000);
        assert!(pcm.after(3.0).is_empty());
    }

    #[test]
    fn silence_has_no_level_and_an_unfinished_recording_is_read_to_its_end() {
        assert_eq!(rms(&[0; 800]), 0.0);
        // A data chunk whose size was never written (0): everything after the header.
        let mut bytes = wav_bytes(8000, 1, &[1, 0, 2, 0, 3, 0]);
        bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(parse_wav(&bytes).unwrap().samples, [1, 2, 3]);
        // Stereo: the first channel.
        let stereo = wav_bytes(8000, 2, &[1, 0, 9, 0, 2, 0, 9, 0]);
        assert_eq!(parse_wav(&stereo).unwrap().samples, [1, 2]);
        assert!(parse_wav(b"RIFF\0\0\0\0WAVE").is_err());
        assert!(parse_wav(b"not a wav").is_err());
    }
}
