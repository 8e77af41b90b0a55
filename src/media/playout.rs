//! The playout scheduler: what the bot says in each 20 ms frame (sans-IO).
//!
//! A queue of segments (a cached clip, or a stretch of silence; streamed TTS
//! joins later) played back to back. [`PlayoutScheduler::next_frame`] always
//! returns a frame: when nothing is queued the line carries μ-law silence, so
//! the outbound RTP clock never waits on the conversation. Segment start and
//! end are reported as [`PlayoutEvent`]s so the conversation knows when the bot
//! has finished speaking.
//!
//! Nothing here allocates per frame: clips are shared slices (`Arc<[u8]>`)
//! read through an offset, and the frame is a fixed array.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::g711;

/// Bytes of one 20 ms PCMU frame.
pub const FRAME_BYTES: usize = 160;
/// Events kept for the driver to drain; older ones are dropped (and counted)
/// if nobody drains them.
const MAX_PENDING_EVENTS: usize = 64;
/// Segments that may wait in the queue; enqueueing beyond is refused.
pub const MAX_QUEUED_SEGMENTS: usize = 32;

/// A clip of μ-law 8 kHz audio shared by every call that plays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// The phrase key (`greet`, `filler_hum`, …), for events and logs.
    pub key: Arc<str>,
    /// The audio, loaded once.
    pub audio: Arc<[u8]>,
}

/// What a segment plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// A cached clip from the phrase cache.
    Clip(Clip),
    /// Deliberate silence of a number of frames (a pause between phrases).
    Silence { frames: u32 },
}

/// Identifies an enqueued segment in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

/// Why a segment stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Played to its end.
    Completed,
    /// Removed by [`PlayoutScheduler::interrupt`].
    Interrupted,
}

/// Reported to the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    Started {
        id: SegmentId,
        label: Arc<str>,
    },
    Finished {
        id: SegmentId,
        label: Arc<str>,
        end: SegmentEnd,
    },
    /// The queue ran dry: the line now carries silence. `enqueued` is how
    /// many segments had been asked for by then, so that a caller who queued
    /// more since can tell a stale Idle from a real one.
    Idle {
        enqueued: u64,
    },
}

/// Whether a frame carries speech or idle silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    Clip,
    /// Silence the conversation asked for.
    Pause,
    /// Nothing queued.
    Idle,
}

/// One frame of outbound audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub payload: [u8; FRAME_BYTES],
    /// RTP marker: first frame of a talkspurt (RFC 3551 §4.1).
    pub marker: bool,
    pub source: FrameSource,
}

#[derive(Debug, Clone)]
struct Segment {
    id: SegmentId,
    kind: SegmentKind,
    /// Bytes (clip) or frames (silence) already played.
    position: usize,
    started: bool,
}

/// Label of silence segments in events, allocated once.
static SILENCE_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("silence"));

impl Segment {
    fn label(&self) -> Arc<str> {
        match &self.kind {
            SegmentKind::Clip(clip) => clip.key.clone(),
            SegmentKind::Silence { .. } => SILENCE_LABEL.clone(),
        }
    }
}

/// The queue is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("playout queue is full ({MAX_QUEUED_SEGMENTS} segments)")]
pub struct QueueFull;

/// Per-call playout state.
#[derive(Debug, Default)]
pub struct PlayoutScheduler {
    queue: VecDeque<Segment>,
    events: VecDeque<PlayoutEvent>,
    next_id: u64,
    /// The next frame carries the RTP marker: the first frame of the stream,
    /// and the first after a hold. We never suppress silence, so a phrase
    /// starting after idle frames is no new talkspurt (RFC 3551 §4.1).
    marker_pending: bool,
    /// Whether `Idle` was already reported for the current idle stretch.
    idle_reported: bool,
    /// Events dropped because nobody drained them.
    dropped_events: u64,
    /// Frames produced, by source.
    clip_frames: u64,
    idle_frames: u64,
}

impl PlayoutScheduler {
    pub fn new() -> Self {
        Self {
            // Nothing has been said yet: no Idle event until something played.
            idle_reported: true,
            marker_pending: true,
            ..Self::default()
        }
    }

    /// Queues a segment behind whatever is queued.
    /// Every call counts as asked for, refused or not (see
    /// [`PlayoutEvent::Idle`]).
    pub fn enqueue(&mut self, kind: SegmentKind) -> Result<SegmentId, QueueFull> {
        let id = SegmentId(self.next_id);
        self.next_id += 1;
        if self.queue.len() >= MAX_QUEUED_SEGMENTS {
            return Err(QueueFull);
        }
        self.queue.push_back(Segment {
            id,
            kind,
            position: 0,
            started: false,
        });
        Ok(id)
    }

    /// Drops everything queued, the segment playing included; the next frame
    /// is silence.
    pub fn interrupt(&mut self) {
        while let Some(segment) = self.queue.pop_front() {
            if segment.started {
                let label = segment.label();
                self.push_event(PlayoutEvent::Finished {
                    id: segment.id,
                    label,
                    end: SegmentEnd::Interrupted,
                });
            }
        }
    }

    /// The next frame starts a new talkspurt (marker bit): the stream resumes
    /// after a hold, with a jump in its timestamps.
    pub fn restart_talkspurt(&mut self) {
        self.marker_pending = true;
    }

    /// True when nothing is queued or playing.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The frame to send now. Always a frame: silence when idle.
    pub fn next_frame(&mut self) -> Frame {
        loop {
            let Some(segment) = self.queue.front_mut() else {
                return self.idle_frame();
            };
            if !segment.started {
                segment.started = true;
                let (id, label) = (segment.id, segment.label());
                self.push_event(PlayoutEvent::Started { id, label });
                continue;
            }
            let segment = self.queue.front_mut().expect("front exists: checked above");
            let produced = match &segment.kind {
                SegmentKind::Clip(clip) => {
                    let audio = &clip.audio[segment.position.min(clip.audio.len())..];
                    if audio.is_empty() {
                        None
                    } else {
                        let take = audio.len().min(FRAME_BYTES);
                        let mut payload = [g711::SILENCE; FRAME_BYTES];
                        payload[..take].copy_from_slice(&audio[..take]);
                        segment.position += take;
                        Some((payload, FrameSource::Clip))
                    }
                }
                SegmentKind::Silence { frames } => {
                    if segment.position >= *frames as usize {
                        None
                    } else {
                        segment.position += 1;
                        Some(([g711::SILENCE; FRAME_BYTES], FrameSource::Pause))
                    }
                }
            };
            match produced {
                Some((payload, source)) => return self.emit(payload, source),
                None => {
                    let done = self.queue.pop_front().expect("front exists: checked above");
                    let label = done.label();
                    self.push_event(PlayoutEvent::Finished {
                        id: done.id,
                        label,
                        end: SegmentEnd::Completed,
                    });
                }
            }
        }
    }

    /// The next event for the conversation, if any.
    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }

    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    pub fn clip_frames(&self) -> u64 {
        self.clip_frames
    }

    pub fn idle_frames(&self) -> u64 {
        self.idle_frames
    }

    fn idle_frame(&mut self) -> Frame {
        if !self.idle_reported {
            self.idle_reported = true;
            self.push_event(PlayoutEvent::Idle {
                enqueued: self.next_id,
            });
        }
        self.emit([g711::SILENCE; FRAME_BYTES], FrameSource::Idle)
    }

    fn emit(&mut self, payload: [u8; FRAME_BYTES], source: FrameSource) -> Frame {
        let marker = std::mem::take(&mut self.marker_pending);
        match source {
            FrameSource::Clip => {
                self.clip_frames += 1;
                self.idle_reported = false;
            }
            FrameSource::Pause => self.idle_reported = false,
            FrameSource::Idle => self.idle_frames += 1,
        }
        Frame {
            payload,
            marker,
            source,
        }
    }

    fn push_event(&mut self, event: PlayoutEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(key: &str, len: usize, fill: u8) -> Clip {
        Clip {
            key: Arc::from(key),
            audio: Arc::from(vec![fill; len]),
        }
    }

    fn drain(s: &mut PlayoutScheduler) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn idle_scheduler_sends_silence_marker_on_the_first_frame_only() {
        let mut s = PlayoutScheduler::new();
        for i in 0..3 {
            let f = s.next_frame();
            assert_eq!(f.payload, [g711::SILENCE; FRAME_BYTES]);
            assert_eq!(f.marker, i == 0);
            assert_eq!(f.source, FrameSource::Idle);
        }
        assert!(drain(&mut s).is_empty(), "no Idle before anything played");
    }

    #[test]
    fn clips_play_back_to_back_byte_for_byte() {
        let mut s = PlayoutScheduler::new();
        let greet: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
        let greet = Clip {
            key: Arc::from("greet"),
            audio: Arc::from(greet),
        };
        let welcome = clip("welcome", 160, 0x42);
        let g = s.enqueue(SegmentKind::Clip(greet.clone())).unwrap();
        let w = s.enqueue(SegmentKind::Clip(welcome)).unwrap();

        let mut out = Vec::new();
        let mut markers = Vec::new();
        for _ in 0..5 {
            let f = s.next_frame();
            markers.push(f.marker);
            out.extend_from_slice(&f.payload);
        }
        // 400 bytes of greet = 2 full frames + 80 bytes padded with silence.
        assert_eq!(&out[..400], &greet.audio[..]);
        assert!(out[400..480].iter().all(|&b| b == g711::SILENCE));
        assert!(out[480..640].iter().all(|&b| b == 0x42));
        assert!(out[640..].iter().all(|&b| b == g711::SILENCE));
        assert_eq!(markers, vec![true, false, false, false, false]);

        let events = drain(&mut s);
        assert_eq!(
            events,
            vec![
                PlayoutEvent::Started {
                    id: g,
                    label: Arc::from("greet")
                },
                PlayoutEvent::Finished {
                    id: g,
                    label: Arc::from("greet"),
                    end: SegmentEnd::Completed
                },
                PlayoutEvent::Started {
                    id: w,
                    label: Arc::from("welcome")
                },
                PlayoutEvent::Finished {
                    id: w,
                    label: Arc::from("welcome"),
                    end: SegmentEnd::Completed
                },
                PlayoutEvent::Idle { enqueued: 2 },
            ]
        );
    }

    #[test]
    fn marker_only_at_start_and_after_a_hold() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("a", 160, 1))).unwrap();
        s.enqueue(SegmentKind::Silence { frames: 2 }).unwrap();
        s.enqueue(SegmentKind::Clip(clip("b", 320, 2))).unwrap();
        let frames: Vec<Frame> = (0..6).map(|_| s.next_frame()).collect();
        let markers: Vec<bool> = frames.iter().map(|f| f.marker).collect();
        assert_eq!(markers, vec![true, false, false, false, false, false]);
        s.restart_talkspurt();
        assert!(s.next_frame().marker, "resumed after hold");
        assert!(!s.next_frame().marker);
        let sources: Vec<FrameSource> = frames.iter().map(|f| f.source).collect();
        use FrameSource::*;
        assert_eq!(sources, vec![Clip, Pause, Pause, Clip, Clip, Idle]);
    }

    #[test]
    fn interrupt_silences_the_next_frame_and_reports_it() {
        let mut s = PlayoutScheduler::new();
        let a = s.enqueue(SegmentKind::Clip(clip("a", 1600, 1))).unwrap();
        s.enqueue(SegmentKind::Clip(clip("b", 1600, 2))).unwrap();
        assert_eq!(s.next_frame().source, FrameSource::Clip);
        drain(&mut s);
        s.interrupt();
        assert!(s.is_idle());
        assert_eq!(s.next_frame().source, FrameSource::Idle);
        assert_eq!(
            drain(&mut s),
            vec![
                PlayoutEvent::Finished {
                    id: a,
                    label: Arc::from("a"),
                    end: SegmentEnd::Interrupted
                },
                PlayoutEvent::Idle { enqueued: 2 },
            ]
        );
    }

    #[test]
    fn empty_clip_finishes_without_a_frame_of_its_own() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("empty", 0, 0))).unwrap();
        s.enqueue(SegmentKind::Clip(clip("b", 160, 9))).unwrap();
        let f = s.next_frame();
        assert_eq!(f.payload, [9; FRAME_BYTES]);
        assert!(f.marker);
    }

    #[test]
    fn queue_and_events_are_bounded() {
        let mut s = PlayoutScheduler::new();
        for _ in 0..MAX_QUEUED_SEGMENTS {
            s.enqueue(SegmentKind::Silence { frames: 0 }).unwrap();
        }
        assert_eq!(
            s.enqueue(SegmentKind::Silence { frames: 1 }),
            Err(QueueFull)
        );
        // 32 segments × 2 events fill the event bound; one more overflows it.
        s.next_frame();
        assert_eq!(s.dropped_events(), 0);
        s.enqueue(SegmentKind::Silence { frames: 0 }).unwrap();
        s.next_frame();
        assert_eq!(s.dropped_events(), 2, "the oldest events make room");
        assert_eq!(drain(&mut s).len(), MAX_PENDING_EVENTS);
    }

    /// The scheduler and the pacer together, one hour of virtual time: the
    /// clip plays once at the start, then silence, one frame per tick.
    #[test]
    fn one_hour_with_pacer_yields_one_frame_per_slot() {
        use crate::media::pacer::Pacer;
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let mut pacer = Pacer::new(t0, 65_000, u32::MAX - 1000);
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("greet", 16_000, 0x11)))
            .unwrap();
        let mut clip_frames = 0;
        let mut now = t0;
        let mut slots = 0u64;
        // Wake every 60 ms (3 frames due each time): catch-up is the norm here.
        while slots < 180_000 {
            while let Some(_slot) = pacer.poll_frame(now) {
                let f = s.next_frame();
                clip_frames += u64::from(f.source == FrameSource::Clip);
                slots += 1;
            }
            now += Duration::from_millis(60);
        }
        assert_eq!(clip_frames, 100);
        assert_eq!(s.idle_frames(), slots - 100);
        assert_eq!(pacer.skipped_frames(), 0);
    }
}
