//! The playout scheduler: what the bot says in each 20 ms frame (sans-IO).
//!
//! A queue of segments played back to back: a cached clip, a pause, or a
//! stream of generated speech that fills while it waits its turn (a jitter
//! buffer). [`PlayoutScheduler::next_frame`] always returns a frame: when
//! nothing is ready the line carries the codec's silence, so the outbound RTP clock
//! never waits on the conversation or on a provider.
//!
//! Streams start only once a pre-roll is buffered (or the stream ended), so a
//! slow provider does not make the reply stutter; a stream that is at the
//! head of the queue without that pre-roll for longer than the grace is
//! reported ([`PlayoutEvent::Starved`]) so the conversation can slip a filler
//! in front of it ([`PlayoutScheduler::enqueue_before`]); a stream that runs
//! dry while playing plays silence, counts an underrun, and buffers its
//! pre-roll again. Segment start and end are reported so the conversation
//! knows what the caller heard.
//!
//! Nothing here allocates per frame: clips are shared slices (`Arc<[u8]>`)
//! read through an offset, streams are ring buffers, and the frame is a
//! fixed array. Clips and streams hold encoded audio as
//! [`codec`](crate::media::codec) lays it out (frames back to back, each
//! Opus packet behind its length), so a frame is read off the front
//! whatever the codec.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::media::codec::{self, Codec, Decoder, Encoder};

/// Octets of one 20 ms frame of G.711 and G.722.
pub use crate::media::codec::FRAME_BYTES;
/// The largest payload of one frame.
pub use crate::media::codec::MAX_FRAME_PAYLOAD;
/// Events kept for the driver to drain; older ones are dropped (and counted)
/// if nobody drains them.
const MAX_PENDING_EVENTS: usize = 64;
/// Segments that may wait in the queue; enqueueing beyond is refused.
pub const MAX_QUEUED_SEGMENTS: usize = 32;
/// Encoded audio a stream may buffer (60 s of G.711, more of Opus); more
/// is dropped and counted.
pub const MAX_STREAM_BYTES: usize = 8000 * 60;

/// A clip of encoded audio shared by every call that plays it: the same
/// audio in one or more codecs (the phrase cache encodes each phrase in
/// every codec once), so a call plays it in its codec without converting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// The phrase key (`greet`, `filler_hum`, …), for events and logs.
    pub key: Arc<str>,
    /// The audio in each codec it was made in (never empty; the same
    /// frames in each, see [`codec`](crate::media::codec)).
    encodings: Arc<[(Codec, Arc<[u8]>)]>,
}

impl Clip {
    /// Audio at hand in one codec (a call whose codec changes later gets it
    /// converted frame by frame).
    pub fn new(key: impl Into<Arc<str>>, codec: Codec, audio: impl Into<Arc<[u8]>>) -> Self {
        Self {
            key: key.into(),
            encodings: Arc::from(vec![(codec, audio.into())]),
        }
    }

    /// The same audio in several codecs; `None` when `encodings` is empty.
    pub fn with_encodings(
        key: impl Into<Arc<str>>,
        encodings: Vec<(Codec, Arc<[u8]>)>,
    ) -> Option<Self> {
        (!encodings.is_empty()).then(|| Self {
            key: key.into(),
            encodings: Arc::from(encodings),
        })
    }

    /// The audio in `codec`, if the clip was made in it.
    pub fn audio(&self, codec: Codec) -> Option<&Arc<[u8]>> {
        self.encodings
            .iter()
            .find(|(c, _)| *c == codec)
            .map(|(_, audio)| audio)
    }

    /// The first codec the clip was made in, and its audio.
    pub fn first(&self) -> (Codec, &Arc<[u8]>) {
        let (codec, audio) = &self.encodings[0];
        (*codec, audio)
    }

    /// The codecs the clip was made in.
    pub fn codecs(&self) -> impl Iterator<Item = Codec> + '_ {
        self.encodings.iter().map(|(c, _)| *c)
    }

    /// Octets it takes in all its codecs together.
    pub fn size(&self) -> usize {
        self.encodings.iter().map(|(_, audio)| audio.len()).sum()
    }

    /// Whether it has no audio.
    pub fn is_empty(&self) -> bool {
        self.first().1.is_empty()
    }
}

/// Converts a clip made in another codec frame by frame, keeping the
/// coders' state from one frame to the next.
#[derive(Debug)]
struct ClipConverter {
    decoder: Decoder,
    encoder: Encoder,
}

impl ClipConverter {
    /// One frame's `payload` into `out`; returns its octets.
    fn convert(&mut self, payload: &[u8], out: &mut [u8]) -> usize {
        let mut pcm = [0i16; FRAME_BYTES];
        let n = self.decoder.decode(payload, &mut pcm);
        if n < FRAME_BYTES {
            // A short last frame (or a refused one): silence after it.
            pcm[n..].fill(0);
        }
        self.encoder.encode_frame(&pcm, out)
    }
}

/// Identifies a stream of generated audio, to feed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub u64);

/// What a segment plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// A cached clip from the phrase cache (or any audio already at hand).
    Clip(Clip),
    /// A cached clip said to cover a wait (a filler): played as a clip,
    /// told apart in its events.
    Filler(Clip),
    /// Deliberate silence of a number of frames (a pause between phrases).
    Silence { frames: u32 },
    /// Generated speech arriving in chunks ([`PlayoutScheduler::feed`]):
    /// sentence `sentence` of reply `reply`.
    Stream {
        id: StreamId,
        reply: u64,
        sentence: usize,
    },
}

/// What a segment is, as whoever queued it knows it; events carry it back
/// (no label to parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentTag {
    /// A cached phrase, by its key.
    Phrase(Arc<str>),
    /// A cached phrase said to cover a wait, by its key.
    Filler(Arc<str>),
    /// Sentence `sentence` of generated reply `reply`.
    Reply { reply: u64, sentence: usize },
    /// Deliberate silence.
    Silence,
}

impl std::fmt::Display for SegmentTag {
    /// The name a timeline shows: the phrase key, `reply#<n>.<sentence>`,
    /// or `silence`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentTag::Phrase(key) | SegmentTag::Filler(key) => f.write_str(key),
            SegmentTag::Reply { reply, sentence } => write!(f, "reply#{reply}.{sentence}"),
            SegmentTag::Silence => f.write_str("silence"),
        }
    }
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
    /// Reached the head of the queue with nothing to play (an empty clip, a
    /// stream that ended without audio): it never sounded and had no start.
    Silent,
}

/// Reported to the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// The segment's first audio frame went out.
    Started { id: SegmentId, tag: SegmentTag },
    Finished {
        id: SegmentId,
        tag: SegmentTag,
        end: SegmentEnd,
    },
    /// A stream at the head of the queue has had no playable audio for the
    /// grace period: the line is silent because of a provider.
    Starved { id: SegmentId, stream: StreamId },
    /// The queue ran dry: the line now carries silence. `enqueued` is how
    /// many segments had been asked for by then, so that a caller who queued
    /// more since can tell a stale Idle from a real one.
    Idle { enqueued: u64 },
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    Clip,
    /// Generated speech.
    Stream,
    /// Silence the conversation asked for.
    Pause,
    /// Silence while a stream buffers its pre-roll or after it ran dry.
    Waiting,
    /// Nothing queued.
    Idle,
}

impl FrameSource {
    /// The frame carries the bot's voice (as opposed to any kind of silence).
    pub fn is_speech(self) -> bool {
        matches!(self, FrameSource::Clip | FrameSource::Stream)
    }
}

/// One frame of outbound audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    buf: [u8; MAX_FRAME_PAYLOAD],
    len: usize,
    /// RTP marker: first frame of the stream, first after a hold.
    pub marker: bool,
    pub source: FrameSource,
}

impl Frame {
    /// The RTP payload.
    pub fn payload(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A frame's payload while it is made.
struct Payload {
    buf: [u8; MAX_FRAME_PAYLOAD],
    len: usize,
}

impl Payload {
    fn silence(codec: Codec) -> Self {
        let mut payload = Self {
            buf: [0; MAX_FRAME_PAYLOAD],
            len: 0,
        };
        payload.set(codec, codec.silence_frame());
        payload
    }

    /// Fills it with one frame of `codec`. A frame shorter than a G.711 or
    /// G.722 frame keeps the silence after it; an Opus packet is the
    /// payload, whatever its size.
    fn set(&mut self, codec: Codec, bytes: &[u8]) {
        let n = bytes.len().min(MAX_FRAME_PAYLOAD);
        self.buf[..n].copy_from_slice(&bytes[..n]);
        self.len = if codec.is_packetized() {
            n
        } else {
            self.len.max(n)
        };
    }
}

/// A stream's jitter buffer.
#[derive(Debug, Clone, Default)]
struct StreamBuffer {
    /// Encoded audio.
    data: VecDeque<u8>,
    /// Whole frames in `data`.
    frames: usize,
    ended: bool,
    /// Playing (pre-roll reached); false again after an underrun.
    playing: bool,
    /// Frames spent waiting at the head of the queue without playing.
    waiting_frames: u32,
    /// `Starved` already reported for this wait.
    starved_reported: bool,
}

impl StreamBuffer {
    /// Buffers `audio` (encoded in `codec`); returns the octets dropped.
    fn feed(&mut self, codec: Codec, audio: &[u8]) -> usize {
        let room = MAX_STREAM_BYTES.saturating_sub(self.data.len());
        if codec.is_packetized() {
            // Whole packets or nothing.
            match codec.count_frames(audio) {
                Some(frames) if audio.len() <= room => {
                    self.frames += frames;
                    self.data.extend(audio);
                    0
                }
                _ => audio.len(),
            }
        } else {
            let take = audio.len().min(room);
            self.data.extend(&audio[..take]);
            // Whole frames only: a short one at the end waits for the rest.
            self.frames = self.data.len() / FRAME_BYTES;
            audio.len() - take
        }
    }

    /// The next frame into `payload`, if there is one.
    fn take_frame(&mut self, codec: Codec, payload: &mut Payload) -> bool {
        if self.data.is_empty() {
            return false;
        }
        let len = if codec.is_packetized() {
            let (Some(&high), Some(&low)) = (self.data.front(), self.data.get(1)) else {
                self.data.clear();
                return false;
            };
            self.data.drain(..2);
            usize::from(u16::from_be_bytes([high, low]))
        } else {
            FRAME_BYTES
        };
        let take = len.min(self.data.len());
        let kept = take.min(MAX_FRAME_PAYLOAD);
        for (dst, src) in payload.buf[..kept].iter_mut().zip(self.data.drain(..kept)) {
            *dst = src;
        }
        self.data.drain(..take - kept);
        if codec.is_packetized() {
            payload.len = kept;
        } else {
            payload.len = payload.len.max(kept);
        }
        self.frames = if codec.is_packetized() {
            self.frames.saturating_sub(1)
        } else {
            self.data.len() / FRAME_BYTES
        };
        true
    }
}

#[derive(Debug, Clone)]
struct Segment {
    id: SegmentId,
    kind: SegmentKind,
    /// Bytes (clip) or frames (silence) already played.
    position: usize,
    /// `Started` was reported (the first audio frame went out).
    started: bool,
    buffer: Option<StreamBuffer>,
}

impl Segment {
    fn tag(&self) -> SegmentTag {
        match &self.kind {
            SegmentKind::Clip(clip) => SegmentTag::Phrase(clip.key.clone()),
            SegmentKind::Filler(clip) => SegmentTag::Filler(clip.key.clone()),
            SegmentKind::Silence { .. } => SegmentTag::Silence,
            &SegmentKind::Stream {
                reply, sentence, ..
            } => SegmentTag::Reply { reply, sentence },
        }
    }

    fn stream_id(&self) -> Option<StreamId> {
        match self.kind {
            SegmentKind::Stream { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// The queue is full.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("playout queue is full ({MAX_QUEUED_SEGMENTS} segments)")]
pub struct QueueFull;

/// Tunables of the streams' jitter buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPolicy {
    /// Frames buffered before a stream starts (and restarts after running dry).
    pub preroll_frames: usize,
    /// Frames a stream may wait at the head of the queue before `Starved`.
    pub starve_grace_frames: u32,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        Self {
            // 60 ms: enough to ride out a provider's chunk jitter.
            preroll_frames: 3,
            // 300 ms.
            starve_grace_frames: 15,
        }
    }
}

/// Counters of one call's playout.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlayoutStats {
    pub clip_frames: u64,
    pub stream_frames: u64,
    pub idle_frames: u64,
    /// Frames of silence while a stream waited for audio.
    pub waiting_frames: u64,
    /// Times a playing stream ran dry.
    pub underruns: u64,
    /// Stream bytes dropped (buffer full, for a stream no longer queued,
    /// or audio not cut in whole frames of the call's codec).
    pub dropped_bytes: u64,
    pub dropped_events: u64,
}

/// Per-call playout state.
#[derive(Debug, Default)]
pub struct PlayoutScheduler {
    queue: VecDeque<Segment>,
    events: VecDeque<PlayoutEvent>,
    next_id: u64,
    policy: StreamPolicy,
    /// The next frame carries the RTP marker: the first frame of the stream,
    /// and the first after a hold. We never suppress silence, so a phrase
    /// starting after idle frames is no new talkspurt (RFC 3551 §4.1).
    marker_pending: bool,
    /// Whether `Idle` was already reported for the current idle stretch.
    idle_reported: bool,
    stats: PlayoutStats,
    /// What the frames are encoded in (streams are fed in it).
    codec: Codec,
    /// For a clip that has no audio in `codec`.
    converter: Option<ClipConverter>,
}

impl PlayoutScheduler {
    pub fn new() -> Self {
        Self::with_policy(StreamPolicy::default())
    }

    pub fn with_policy(policy: StreamPolicy) -> Self {
        Self {
            // Nothing has been said yet: no Idle event until something played.
            idle_reported: true,
            marker_pending: true,
            policy,
            ..Self::default()
        }
    }

    /// Queues a segment behind whatever is queued. Every call counts as
    /// asked for, refused or not (see [`PlayoutEvent::Idle`]).
    pub fn enqueue(&mut self, kind: SegmentKind) -> Result<SegmentId, QueueFull> {
        let segment = self.make_segment(kind);
        let id = segment.id;
        if self.queue.len() >= MAX_QUEUED_SEGMENTS {
            return Err(QueueFull);
        }
        self.queue.push_back(segment);
        Ok(id)
    }

    /// Puts a segment right before a stream that still waits for its audio
    /// (a filler covering it), or that ran dry mid-sentence and is silencing
    /// the line. When that stream is sounding again, or is gone, the segment
    /// is not queued: a late filler must not cut the reply. Counts as asked
    /// for either way.
    pub fn enqueue_before(&mut self, stream: StreamId, kind: SegmentKind) -> Option<SegmentId> {
        let segment = self.make_segment(kind);
        let id = segment.id;
        let index = self
            .queue
            .iter()
            .position(|s| s.stream_id() == Some(stream))?;
        let target = &self.queue[index];
        // A stream that already spoke takes a filler only while it is the
        // one silencing the line (at the head, run dry); once its audio
        // flows again the filler would cut it.
        let stalled_head = index == 0
            && target
                .buffer
                .as_ref()
                .is_some_and(|b| !b.playing && !b.ended);
        if (target.started && !stalled_head) || self.queue.len() >= MAX_QUEUED_SEGMENTS {
            return None;
        }
        // Never in front of a segment that is already sounding.
        let at = if index == 0 || !self.queue[0].started {
            index
        } else {
            index.max(1)
        };
        self.queue.insert(at, segment);
        if let Some(buffer) = self.queue[at + 1].buffer.as_mut() {
            buffer.waiting_frames = 0;
            buffer.starved_reported = false;
        }
        Some(id)
    }

    fn make_segment(&mut self, kind: SegmentKind) -> Segment {
        let id = SegmentId(self.next_id);
        self.next_id += 1;
        let buffer = matches!(kind, SegmentKind::Stream { .. }).then(StreamBuffer::default);
        Segment {
            id,
            kind,
            position: 0,
            started: false,
            buffer,
        }
    }

    /// Audio for a queued stream. Audio for a stream no longer queued (it was
    /// interrupted) is dropped and counted.
    /// Audio of a packetized codec (Opus) comes in whole frames; a chunk
    /// that is not is dropped whole.
    pub fn feed(&mut self, stream: StreamId, audio: &[u8]) {
        let codec = self.codec;
        let dropped = match self.stream_buffer(stream) {
            Some(buffer) => buffer.feed(codec, audio),
            None => audio.len(),
        };
        self.stats.dropped_bytes += dropped as u64;
    }

    /// The stream will get no more audio.
    pub fn end_stream(&mut self, stream: StreamId) {
        if let Some(buffer) = self.stream_buffer(stream) {
            buffer.ended = true;
        }
    }

    fn stream_buffer(&mut self, stream: StreamId) -> Option<&mut StreamBuffer> {
        self.queue
            .iter_mut()
            .find(|s| s.stream_id() == Some(stream))
            .and_then(|s| s.buffer.as_mut())
    }

    /// Removes a stream from the queue (its reply was cancelled); if it was
    /// playing it stops here, reported as interrupted.
    pub fn remove_stream(&mut self, stream: StreamId) {
        if let Some(index) = self
            .queue
            .iter()
            .position(|s| s.stream_id() == Some(stream))
        {
            if let Some(segment) = self.queue.remove(index) {
                if segment.started {
                    let tag = segment.tag();
                    self.push_event(PlayoutEvent::Finished {
                        id: segment.id,
                        tag,
                        end: SegmentEnd::Interrupted,
                    });
                }
            }
        }
    }

    /// Drops everything queued, the segment playing included; the next frame
    /// is silence.
    pub fn interrupt(&mut self) {
        while let Some(segment) = self.queue.pop_front() {
            if segment.started {
                let tag = segment.tag();
                self.push_event(PlayoutEvent::Finished {
                    id: segment.id,
                    tag,
                    end: SegmentEnd::Interrupted,
                });
            }
        }
    }

    /// True when nothing is queued or playing.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// The codec frames are made in.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Frames are made in `codec` from now on (a re-offer changed it):
    /// audio already buffered for streams is converted once; clips play
    /// their audio in that codec (one made in a single other codec is
    /// converted frame by frame as it plays).
    pub fn set_codec(&mut self, codec: Codec) {
        let from = std::mem::replace(&mut self.codec, codec);
        if from == codec {
            return;
        }
        for segment in &mut self.queue {
            if let Some(buffer) = segment.buffer.as_mut() {
                let audio = codec::transcode(from, codec, buffer.data.make_contiguous());
                buffer.frames = codec.count_frames(&audio).unwrap_or(0);
                buffer.data = audio.into();
            }
        }
    }

    /// The next frame carries the marker: the stream resumes after a hold,
    /// with a jump in its timestamps.
    pub fn restart_talkspurt(&mut self) {
        self.marker_pending = true;
    }

    /// The frame to send now. Always a frame: silence when nothing is ready.
    pub fn next_frame(&mut self) -> Frame {
        let policy = self.policy;
        loop {
            let Some(segment) = self.queue.front_mut() else {
                return self.idle_frame();
            };
            let mut payload = Payload::silence(self.codec);
            let produced = match (&segment.kind, segment.buffer.as_mut()) {
                (SegmentKind::Clip(clip) | SegmentKind::Filler(clip), _) => {
                    let (made_in, audio) = match clip.audio(self.codec) {
                        Some(audio) => (self.codec, audio),
                        None => clip.first(),
                    };
                    let audio = &audio[segment.position.min(audio.len())..];
                    match made_in.first_frame(audio) {
                        None => None,
                        Some((frame, taken)) => {
                            if made_in == self.codec {
                                payload.set(made_in, frame);
                            } else {
                                let converter =
                                    self.converter.get_or_insert_with(|| ClipConverter {
                                        decoder: Decoder::new(made_in),
                                        encoder: Encoder::new(self.codec),
                                    });
                                if converter.decoder.codec() != made_in
                                    || converter.encoder.codec() != self.codec
                                {
                                    *converter = ClipConverter {
                                        decoder: Decoder::new(made_in),
                                        encoder: Encoder::new(self.codec),
                                    };
                                }
                                payload.len = converter.convert(frame, &mut payload.buf);
                            }
                            segment.position += taken;
                            Some(FrameSource::Clip)
                        }
                    }
                }
                (SegmentKind::Silence { frames }, _) => {
                    if segment.position >= *frames as usize {
                        None
                    } else {
                        segment.position += 1;
                        Some(FrameSource::Pause)
                    }
                }
                (SegmentKind::Stream { id, .. }, Some(buffer)) => {
                    let stream = *id;
                    if !buffer.playing && (buffer.frames >= policy.preroll_frames || buffer.ended) {
                        buffer.playing = true;
                    }
                    if buffer.playing && buffer.take_frame(self.codec, &mut payload) {
                        buffer.waiting_frames = 0;
                        buffer.starved_reported = false;
                        Some(FrameSource::Stream)
                    } else if buffer.ended {
                        None
                    } else {
                        // Waiting for audio: silence, and say so after the grace.
                        if buffer.playing {
                            buffer.playing = false;
                            self.stats.underruns += 1;
                        }
                        buffer.waiting_frames += 1;
                        // Before its first audio or in the middle of it
                        // (the provider stalled): either way the line is
                        // silent and a filler may cover it.
                        let report = buffer.waiting_frames >= policy.starve_grace_frames
                            && !buffer.starved_reported;
                        if report {
                            buffer.starved_reported = true;
                        }
                        let id = segment.id;
                        self.stats.waiting_frames += 1;
                        if report {
                            self.push_event(PlayoutEvent::Starved { id, stream });
                        }
                        return self.emit(payload, FrameSource::Waiting);
                    }
                }
                (SegmentKind::Stream { .. }, None) => None,
            };
            let segment = self.queue.front_mut().expect("front exists: checked above");
            match produced {
                Some(source) => {
                    if !segment.started {
                        segment.started = true;
                        let (id, tag) = (segment.id, segment.tag());
                        self.push_event(PlayoutEvent::Started { id, tag });
                    }
                    return self.emit(payload, source);
                }
                None => {
                    let done = self.queue.pop_front().expect("front exists: checked above");
                    // A segment that never sounded (an empty clip, a stream
                    // that ended without audio) is reported as finished too,
                    // without a start.
                    self.push_event(PlayoutEvent::Finished {
                        id: done.id,
                        tag: done.tag(),
                        end: if done.started {
                            SegmentEnd::Completed
                        } else {
                            SegmentEnd::Silent
                        },
                    });
                }
            }
        }
    }

    /// The next event for the conversation, if any.
    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    fn idle_frame(&mut self) -> Frame {
        if !self.idle_reported {
            self.idle_reported = true;
            self.push_event(PlayoutEvent::Idle {
                enqueued: self.next_id,
            });
        }
        let silence = Payload::silence(self.codec);
        self.emit(silence, FrameSource::Idle)
    }

    fn emit(&mut self, payload: Payload, source: FrameSource) -> Frame {
        let marker = std::mem::take(&mut self.marker_pending);
        match source {
            FrameSource::Clip => self.stats.clip_frames += 1,
            FrameSource::Stream => self.stats.stream_frames += 1,
            FrameSource::Idle => self.stats.idle_frames += 1,
            FrameSource::Pause | FrameSource::Waiting => {}
        }
        if source != FrameSource::Idle {
            self.idle_reported = false;
        }
        Frame {
            buf: payload.buf,
            len: payload.len,
            marker,
            source,
        }
    }

    fn push_event(&mut self, event: PlayoutEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.stats.dropped_events += 1;
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::g711;

    fn clip(key: &str, len: usize, fill: u8) -> Clip {
        Clip::new(key, Codec::Pcmu, vec![fill; len])
    }

    fn drain(s: &mut PlayoutScheduler) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn a_stream_that_ends_without_audio_is_reported_as_never_heard() {
        let mut s = PlayoutScheduler::new();
        let id = s
            .enqueue(SegmentKind::Stream {
                id: StreamId(9),
                reply: 1,
                sentence: 1,
            })
            .unwrap();
        s.end_stream(StreamId(9));
        let f = s.next_frame();
        assert!(!f.source.is_speech());
        let events = drain(&mut s);
        assert_eq!(
            events[0],
            PlayoutEvent::Finished {
                id,
                tag: SegmentTag::Reply {
                    reply: 1,
                    sentence: 1
                },
                end: SegmentEnd::Silent
            }
        );
        assert!(!events
            .iter()
            .any(|e| matches!(e, PlayoutEvent::Started { .. })));
    }

    #[test]
    fn idle_scheduler_sends_silence_marker_on_the_first_frame_only() {
        let mut s = PlayoutScheduler::new();
        for i in 0..3 {
            let f = s.next_frame();
            assert_eq!(f.payload(), [g711::SILENCE; FRAME_BYTES]);
            assert_eq!(f.marker, i == 0);
            assert_eq!(f.source, FrameSource::Idle);
        }
        assert!(drain(&mut s).is_empty(), "no Idle before anything played");
    }

    #[test]
    fn a_codec_change_converts_what_is_queued_and_the_silence() {
        let mut s = PlayoutScheduler::new();
        s.set_codec(Codec::Pcma);
        assert_eq!(s.next_frame().payload(), [g711::ALAW_SILENCE; FRAME_BYTES]);
        // A μ-law clip (a cache without A-law) goes out as A-law.
        let loud = g711::encode(8000);
        s.enqueue(SegmentKind::Clip(clip("greet", 160, loud)))
            .unwrap();
        let frame = s.next_frame();
        assert_eq!(frame.payload(), [g711::ulaw_to_alaw(loud); FRAME_BYTES]);
        // A stream fed in A-law, then the call goes back to μ-law: what is
        // buffered is converted once.
        let id = StreamId(1);
        s.enqueue(SegmentKind::Stream {
            id,
            reply: 1,
            sentence: 0,
        })
        .unwrap();
        let alaw = g711::alaw_encode(-3000);
        s.feed(id, &[alaw; 480]);
        s.set_codec(Codec::Pcmu);
        let frame = s.next_frame();
        assert_eq!(frame.payload(), [g711::alaw_to_ulaw(alaw); FRAME_BYTES]);
        s.end_stream(id);
        for _ in 0..3 {
            s.next_frame();
        }
        assert_eq!(s.next_frame().payload(), [g711::SILENCE; FRAME_BYTES]);
    }

    /// `frames` Opus packets of a voiced sound, as encoded audio.
    fn opus_audio(frames: usize) -> Vec<u8> {
        let pcm: Vec<i16> = (0..frames * 320)
            .map(|n| (6000.0 * (n as f64 * 0.11).sin()) as i16)
            .collect();
        let mut encoder = Encoder::new(Codec::Opus);
        let mut audio = Vec::new();
        encoder.encode_audio_extend(&pcm, &mut audio);
        audio
    }

    #[test]
    fn an_opus_stream_plays_a_packet_a_frame_and_counts_its_pre_roll_in_frames() {
        let mut s = PlayoutScheduler::new();
        s.set_codec(Codec::Opus);
        // Idle: the Opus silence packet.
        assert_eq!(s.next_frame().payload(), Codec::Opus.silence_frame());
        let audio = opus_audio(5);
        let packets: Vec<&[u8]> = Codec::Opus.frames(&audio).collect();
        assert_eq!(packets.len(), 5);
        let id = StreamId(4);
        s.enqueue(SegmentKind::Stream {
            id,
            reply: 1,
            sentence: 0,
        })
        .unwrap();
        // Two packets are fewer than the three frames of pre-roll, however
        // many octets they take.
        let two = packets[0].len() + packets[1].len() + 4;
        s.feed(id, &audio[..two]);
        assert_eq!(s.next_frame().source, FrameSource::Waiting);
        // Half a packet is not Opus audio: dropped whole, counted.
        s.feed(id, &audio[two..two + 3]);
        assert_eq!(s.stats().dropped_bytes, 3);
        s.feed(id, &audio[two..]);
        s.end_stream(id);
        let played: Vec<Vec<u8>> = (0..5).map(|_| s.next_frame().payload().to_vec()).collect();
        let expected: Vec<Vec<u8>> = packets.iter().map(|p| p.to_vec()).collect();
        assert_eq!(played, expected, "packet for packet");
        let after = s.next_frame();
        assert_eq!(after.payload(), Codec::Opus.silence_frame());
        assert_eq!(after.source, FrameSource::Idle);
        // A packet shorter than the silence packet goes out as it is, in a
        // clip as in a stream.
        let mut tiny = Vec::new();
        codec::push_frame(Codec::Opus, &[0x48, 0x01], &mut tiny);
        codec::push_frame(Codec::Opus, &[0x48; 50], &mut tiny);
        s.enqueue(SegmentKind::Clip(Clip::new("tiny", Codec::Opus, tiny)))
            .unwrap();
        assert_eq!(s.next_frame().payload(), [0x48, 0x01]);
        assert_eq!(s.next_frame().payload(), [0x48; 50]);
        assert_eq!(s.next_frame().payload(), Codec::Opus.silence_frame());
    }

    #[test]
    fn a_re_offer_to_opus_codes_what_is_buffered_and_converts_a_g711_clip() {
        let mut s = PlayoutScheduler::new();
        let loud: Vec<u8> = (0..800u32)
            .map(|n| g711::encode((7000.0 * (n as f64 * 0.2).sin()) as i16))
            .collect();
        // A μ-law clip playing when the call turns to Opus: its next frames
        // go out as Opus packets of the same audio.
        s.enqueue(SegmentKind::Clip(Clip::new(
            "greet",
            Codec::Pcmu,
            loud.clone(),
        )))
        .unwrap();
        assert_eq!(s.next_frame().payload(), &loud[..160]);
        let id = StreamId(2);
        s.enqueue(SegmentKind::Stream {
            id,
            reply: 1,
            sentence: 0,
        })
        .unwrap();
        s.feed(id, &loud);
        s.end_stream(id);
        s.set_codec(Codec::Opus);
        let mut decoder = Decoder::new(Codec::Opus);
        let mut heard = Vec::new();
        for _ in 0..9 {
            let frame = s.next_frame();
            assert!(frame.source.is_speech());
            assert!(frame.payload().len() < FRAME_BYTES, "an Opus packet");
            let mut pcm = [0i16; FRAME_BYTES];
            let n = decoder.decode(frame.payload(), &mut pcm);
            assert_eq!(n, FRAME_BYTES);
            heard.extend_from_slice(&pcm);
        }
        assert_eq!(decoder.errors(), 0);
        // The clip's last four frames, then the stream's five: loud audio
        // all through (a decoder that heard silence or noise would not be).
        let level = |pcm: &[i16]| {
            pcm.iter().map(|s| i64::from(s.unsigned_abs())).sum::<i64>() / pcm.len() as i64
        };
        for (n, frame) in heard.chunks(FRAME_BYTES).enumerate().skip(1) {
            assert!(level(frame) > 1500, "frame {n}: level {}", level(frame));
        }
        assert_eq!(s.next_frame().source, FrameSource::Idle);
    }

    #[test]
    fn clips_play_back_to_back_byte_for_byte() {
        let mut s = PlayoutScheduler::new();
        let greet: Vec<u8> = (0..400u32).map(|i| (i % 251) as u8).collect();
        let greet = Clip::new("greet", Codec::Pcmu, greet);
        let welcome = clip("welcome", 160, 0x42);
        let g = s.enqueue(SegmentKind::Clip(greet.clone())).unwrap();
        let w = s.enqueue(SegmentKind::Clip(welcome)).unwrap();

        let mut out = Vec::new();
        let mut markers = Vec::new();
        for _ in 0..5 {
            let f = s.next_frame();
            markers.push(f.marker);
            out.extend_from_slice(f.payload());
        }
        // 400 bytes of greet = 2 full frames + 80 bytes padded with silence.
        assert_eq!(&out[..400], &greet.first().1[..]);
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
                    tag: SegmentTag::Phrase(Arc::from("greet"))
                },
                PlayoutEvent::Finished {
                    id: g,
                    tag: SegmentTag::Phrase(Arc::from("greet")),
                    end: SegmentEnd::Completed
                },
                PlayoutEvent::Started {
                    id: w,
                    tag: SegmentTag::Phrase(Arc::from("welcome"))
                },
                PlayoutEvent::Finished {
                    id: w,
                    tag: SegmentTag::Phrase(Arc::from("welcome")),
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
                    tag: SegmentTag::Phrase(Arc::from("a")),
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
        assert_eq!(f.payload(), [9; FRAME_BYTES]);
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
        // An empty segment is one event (its Finished): twice a full queue
        // of them fills the event bound; one more overflows it.
        s.next_frame();
        for _ in 0..MAX_QUEUED_SEGMENTS {
            s.enqueue(SegmentKind::Silence { frames: 0 }).unwrap();
        }
        s.next_frame();
        assert_eq!(s.stats().dropped_events, 0);
        s.enqueue(SegmentKind::Silence { frames: 0 }).unwrap();
        s.next_frame();
        assert_eq!(s.stats().dropped_events, 1, "the oldest event makes room");
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
        assert_eq!(s.stats().idle_frames, slots - 100);
        assert_eq!(pacer.skipped_frames(), 0);
    }

    fn stream(id: u64) -> SegmentKind {
        SegmentKind::Stream {
            id: StreamId(id),
            reply: 1,
            sentence: 0,
        }
    }

    /// A filler, then a generated reply whose audio arrives during the filler:
    /// the reply waits for the filler's end (no filler cut mid-word) and
    /// follows it with no silent frame in between.
    #[test]
    fn a_stream_ready_in_time_follows_the_filler_without_a_gap() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("filler_hum", 1600, 0x11)))
            .unwrap();
        s.enqueue(stream(1)).unwrap();
        let mut sources = Vec::new();
        for n in 0..30 {
            if n == 3 {
                s.feed(StreamId(1), &[0x22; 800]);
            }
            if n == 5 {
                s.feed(StreamId(1), &[0x22; 800]);
                s.end_stream(StreamId(1));
            }
            sources.push(s.next_frame().source);
        }
        use FrameSource::*;
        let expected: Vec<FrameSource> = std::iter::repeat_n(Clip, 10)
            .chain(std::iter::repeat_n(Stream, 10))
            .chain(std::iter::repeat_n(Idle, 10))
            .collect();
        assert_eq!(sources, expected);
        let events = drain(&mut s);
        assert!(!events
            .iter()
            .any(|e| matches!(e, PlayoutEvent::Starved { .. })));
        assert_eq!(s.stats().underruns, 0);
    }

    #[test]
    fn a_late_stream_waits_for_its_preroll_and_is_reported_starved_once() {
        let policy = StreamPolicy {
            preroll_frames: 3,
            starve_grace_frames: 15,
        };
        let mut s = PlayoutScheduler::with_policy(policy);
        let reply = s.enqueue(stream(7)).unwrap();
        let mut starved_at = Vec::new();
        for n in 0..40 {
            if n == 25 {
                s.feed(StreamId(7), &[0x33; 320]); // below the pre-roll
            }
            if n == 30 {
                s.feed(StreamId(7), &[0x33; 320]);
            }
            let f = s.next_frame();
            if n < 30 {
                assert_eq!(f.source, FrameSource::Waiting, "frame {n}");
            }
            for e in drain(&mut s) {
                if let PlayoutEvent::Starved { id, stream } = e {
                    assert_eq!((id, stream), (reply, StreamId(7)));
                    starved_at.push(n);
                }
            }
        }
        assert_eq!(starved_at, vec![14], "once, after 15 frames of waiting");
        assert_eq!(
            s.stats().waiting_frames,
            30 + 6,
            "30 before the pre-roll, 6 after its 4 frames ran out"
        );
    }

    #[test]
    fn a_filler_slips_in_front_of_a_starved_stream() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(stream(1)).unwrap();
        for _ in 0..15 {
            s.next_frame();
        }
        assert!(drain(&mut s)
            .iter()
            .any(|e| matches!(e, PlayoutEvent::Starved { .. })));
        assert!(s
            .enqueue_before(StreamId(1), SegmentKind::Clip(clip("filler_ok", 320, 0x44)))
            .is_some());
        s.feed(StreamId(1), &[0x55; 480]);
        s.end_stream(StreamId(1));
        let payloads: Vec<u8> = (0..5).map(|_| s.next_frame().payload()[0]).collect();
        assert_eq!(payloads, vec![0x44, 0x44, 0x55, 0x55, 0x55]);
    }

    #[test]
    fn a_filler_never_cuts_a_clip_mid_word() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("long", 800, 0x01)))
            .unwrap();
        s.enqueue(stream(5)).unwrap();
        s.next_frame();
        assert!(s
            .enqueue_before(StreamId(5), SegmentKind::Clip(clip("other", 160, 0x02)))
            .is_some());
        let payloads: Vec<u8> = (0..6).map(|_| s.next_frame().payload()[0]).collect();
        assert_eq!(payloads, vec![0x01, 0x01, 0x01, 0x01, 0x02, g711::SILENCE]);
    }

    #[test]
    fn a_stream_that_runs_dry_counts_an_underrun_and_rebuffers() {
        let mut s = PlayoutScheduler::with_policy(StreamPolicy {
            preroll_frames: 2,
            starve_grace_frames: 15,
        });
        s.enqueue(stream(2)).unwrap();
        s.feed(StreamId(2), &[0x66; 320]);
        let mut sources = vec![
            s.next_frame().source,
            s.next_frame().source,
            s.next_frame().source,
        ];
        assert_eq!(s.stats().underruns, 1);
        s.feed(StreamId(2), &[0x66; 160]);
        sources.push(s.next_frame().source); // below the pre-roll again: wait
        s.feed(StreamId(2), &[0x66; 160]);
        sources.push(s.next_frame().source);
        use FrameSource::*;
        assert_eq!(sources, vec![Stream, Stream, Waiting, Waiting, Stream]);
        assert!(
            !drain(&mut s)
                .iter()
                .any(|e| matches!(e, PlayoutEvent::Starved { .. })),
            "a short underrun is not reported"
        );
    }

    #[test]
    fn a_stream_stalled_mid_sentence_is_reported_and_a_filler_covers_it() {
        let mut s = PlayoutScheduler::with_policy(StreamPolicy {
            preroll_frames: 2,
            starve_grace_frames: 15,
        });
        s.enqueue(stream(2)).unwrap();
        s.feed(StreamId(2), &[0x66; 320]);
        s.next_frame();
        s.next_frame();
        drain(&mut s);
        // The provider stalls: 14 silent frames, then the report, once.
        let starved = |s: &mut PlayoutScheduler| {
            drain(s)
                .iter()
                .filter(|e| matches!(e, PlayoutEvent::Starved { .. }))
                .count()
        };
        for _ in 0..14 {
            assert_eq!(s.next_frame().source, FrameSource::Waiting);
        }
        assert_eq!(starved(&mut s), 0);
        s.next_frame();
        assert_eq!(starved(&mut s), 1);
        for _ in 0..20 {
            s.next_frame();
        }
        assert_eq!(starved(&mut s), 0, "reported once per stall");
        // The filler goes in front of the rest of the sentence.
        assert!(s
            .enqueue_before(StreamId(2), SegmentKind::Clip(clip("filler", 320, 0x01)))
            .is_some());
        s.feed(StreamId(2), &[0x67; 480]);
        let payloads: Vec<u8> = (0..5).map(|_| s.next_frame().payload()[0]).collect();
        assert_eq!(payloads, vec![0x01, 0x01, 0x67, 0x67, 0x67]);
        // Sounding again: a late filler is not let in.
        assert!(s
            .enqueue_before(StreamId(2), SegmentKind::Clip(clip("filler", 320, 0x01)))
            .is_none());
    }

    #[test]
    fn audio_for_an_interrupted_stream_is_dropped_and_counted() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(stream(3)).unwrap();
        s.feed(StreamId(3), &[1; 480]);
        s.next_frame();
        s.interrupt();
        s.feed(StreamId(3), &[1; 1000]);
        assert_eq!(s.stats().dropped_bytes, 1000);
        assert_eq!(s.next_frame().source, FrameSource::Idle);
        let events = drain(&mut s);
        assert!(events.contains(&PlayoutEvent::Finished {
            id: SegmentId(0),
            tag: SegmentTag::Reply {
                reply: 1,
                sentence: 0
            },
            end: SegmentEnd::Interrupted
        }));
    }

    #[test]
    fn a_cancelled_stream_leaves_the_queue_and_the_rest_plays() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(SegmentKind::Clip(clip("filler", 160, 0x01)))
            .unwrap();
        s.enqueue(stream(8)).unwrap();
        s.enqueue(SegmentKind::Clip(clip("fallback", 160, 0x02)))
            .unwrap();
        s.feed(StreamId(8), &[0x03; 480]);
        s.remove_stream(StreamId(8));
        let payloads: Vec<u8> = (0..3).map(|_| s.next_frame().payload()[0]).collect();
        assert_eq!(payloads, vec![0x01, 0x02, g711::SILENCE]);
    }

    #[test]
    fn a_late_filler_for_a_stream_that_started_is_dropped() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(stream(9)).unwrap();
        for _ in 0..15 {
            s.next_frame();
        }
        // The audio arrives and the stream starts before the filler does.
        s.feed(StreamId(9), &[0x55; 960]);
        assert_eq!(s.next_frame().source, FrameSource::Stream);
        assert_eq!(
            s.enqueue_before(StreamId(9), SegmentKind::Clip(clip("filler", 320, 1))),
            None
        );
        assert!(
            (0..5).all(|_| s.next_frame().payload()[0] == 0x55),
            "no filler inside the reply"
        );
        // Still waiting: the filler goes right in front of it.
        s.enqueue(stream(10)).unwrap();
        let id = s.enqueue_before(StreamId(10), SegmentKind::Clip(clip("filler", 160, 2)));
        assert!(id.is_some());
    }

    #[test]
    fn a_stream_buffer_is_bounded() {
        let mut s = PlayoutScheduler::new();
        s.enqueue(stream(4)).unwrap();
        s.feed(StreamId(4), &vec![0; MAX_STREAM_BYTES + 500]);
        assert_eq!(s.stats().dropped_bytes, 500);
    }
}
