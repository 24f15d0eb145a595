//! Per-socket order of chat messages: what one socket has been sent of each conversation
//! it joined, so that it gets every message it did not send itself exactly once and in
//! `seq` order (PROTOCOL §4, "Delivery").
//!
//! The live stream alone moves a conversation's cursor. The socket's own messages travel
//! in the stream too (marked with its session id), so they move the cursor without being
//! sent; acks never touch it, which is why an ack that overtakes another sender's message
//! can no longer hide that message. A frame further ahead than the next `seq` is a gap:
//! it and everything after it wait while the session fills the gap from storage, or tells
//! the client `resync_required` when that is not possible.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::VecDeque;

use bytes::Bytes;

use super::hub::{FrameKind, Outbound, SocketId};
use super::port::framed;
use super::protocol::ServerFrame;
use crate::db::{ConversationId, UserId};
use crate::domain::chat::{Message, RECOVERY_MAX};
use crate::error::ErrorBody;

/// The frames one delivery makes a socket send, framed for the wire (`port::framed`):
/// almost always one or two, kept on the stack (a delivery to each of a room's sockets
/// allocates nothing here).
pub type Out = smallvec::SmallVec<[Bytes; 4]>;

/// How many of its own `client_msg_id`s a socket remembers, to leave them out of a fill.
const OWN_REMEMBERED: usize = 1024;

/// A gap to fill from storage: messages after `after` up to `upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub conversation: ConversationId,
    pub after: i64,
    pub upto: i64,
}

/// More frames waited behind a join or a fill than the socket may queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The chat streams of one socket.
#[derive(Default)]
pub struct Streams {
    /// Highest `seq` accounted for, per joined conversation.
    cursors: HashMap<ConversationId, i64>,
    /// Conversations being joined or filled: their live frames wait here, in order.
    waiting: HashMap<ConversationId, Vec<Outbound>>,
    /// Gaps being filled (the `after` each fill started from).
    filling: HashMap<ConversationId, i64>,
    /// `client_msg_id`s this socket sent, oldest first, for leaving them out of a fill.
    own: HashSet<(ConversationId, String)>,
    own_order: VecDeque<(ConversationId, String)>,
}

impl Streams {
    /// A join is under way: live frames of the conversation wait for its reply.
    pub fn begin_join(&mut self, conversation: ConversationId) {
        self.waiting.entry(conversation).or_default();
        self.filling.remove(&conversation);
    }

    /// The join's reply is sent; it covered everything up to `last_seq`. Answers the
    /// frames that waited, to be passed to [`Streams::accept`] again.
    pub fn joined(&mut self, conversation: ConversationId, last_seq: i64) -> Vec<Outbound> {
        self.cursors.insert(conversation, last_seq);
        self.waiting.remove(&conversation).unwrap_or_default()
    }

    /// The join failed: frames that waited are dropped with it (the socket is not in the
    /// room unless an earlier join put it there).
    pub fn join_failed(&mut self, conversation: ConversationId) -> Vec<Outbound> {
        if self.filling.contains_key(&conversation) || self.cursors.contains_key(&conversation) {
            return Vec::new();
        }
        self.waiting.remove(&conversation).unwrap_or_default()
    }

    pub fn left(&mut self, conversation: ConversationId) {
        self.cursors.remove(&conversation);
        self.waiting.remove(&conversation);
        self.filling.remove(&conversation);
    }

    /// This socket is sending a message with this id.
    pub fn note_own(&mut self, conversation: ConversationId, client_msg_id: &str) {
        let key = (conversation, client_msg_id.to_string());
        if self.own.insert(key.clone()) {
            self.own_order.push_back(key);
            if self.own_order.len() > OWN_REMEMBERED {
                if let Some(old) = self.own_order.pop_front() {
                    self.own.remove(&old);
                }
            }
        }
    }

    /// Takes one frame from the hub: pushes what to send now onto `out`. Answers the gap
    /// to fill when this frame is ahead of the next `seq` (it then waits, with everything
    /// after it in that conversation), or [`Overflow`] when too many frames wait.
    pub fn accept(
        &mut self,
        me: SocketId,
        frame: Outbound,
        max_waiting: usize,
        out: &mut Out,
    ) -> Result<Option<Gap>, Overflow> {
        let FrameKind::Chat { conversation, seq } = frame.kind else {
            if frame.skip != Some(me) {
                out.push(frame.wire);
            }
            return Ok(None);
        };
        // Almost always nothing waits: one lookup per frame, not two.
        let waiting = match self.waiting.is_empty() {
            true => None,
            false => self.waiting.get_mut(&conversation),
        };
        if let Some(waiting) = waiting {
            if waiting.len() >= max_waiting {
                return Err(Overflow);
            }
            waiting.push(frame);
            return Ok(None);
        }
        let Some(cursor) = self.cursors.get_mut(&conversation) else {
            // Not joined on this socket (a delivery raced with a leave): nothing to keep.
            return Ok(None);
        };
        if seq <= *cursor {
            return Ok(None);
        }
        if seq > *cursor + 1 {
            let gap = Gap {
                conversation,
                after: *cursor,
                upto: seq - 1,
            };
            self.waiting.insert(conversation, vec![frame]);
            self.filling.insert(conversation, gap.after);
            return Ok(Some(gap));
        }
        *cursor = seq;
        if frame.skip != Some(me) {
            out.push(frame.wire);
        }
        Ok(None)
    }

    /// A fill finished: pushes the stored messages this socket did not send (or
    /// `resync_required` when they could not all be had) onto `out`, moves the cursor past
    /// the gap, and answers the frames that waited, to be passed to `accept` again.
    /// A fill overtaken by a leave or a new join is ignored.
    pub fn filled(
        &mut self,
        gap: Gap,
        user: UserId,
        messages: Option<Vec<Message>>,
        out: &mut Out,
    ) -> Vec<Outbound> {
        if self.filling.get(&gap.conversation) != Some(&gap.after)
            || self.cursors.get(&gap.conversation) != Some(&gap.after)
        {
            return Vec::new();
        }
        self.filling.remove(&gap.conversation);
        let mut next = gap.after + 1;
        for message in messages.unwrap_or_default() {
            if message.seq != next {
                break;
            }
            next += 1;
            let own = message.sender_id == user
                && self
                    .own
                    .contains(&(gap.conversation, message.client_msg_id.clone()));
            if !own {
                let text = crate::realtime::protocol::encode_notice(
                    &crate::domain::events::Notice::NewMessage { message },
                );
                out.push(framed(text.as_bytes()));
            }
        }
        if next <= gap.upto {
            out.push(framed(
                resync_notice(gap.conversation).encode(None).as_bytes(),
            ));
        }
        self.cursors.insert(gap.conversation, gap.upto);
        self.waiting.remove(&gap.conversation).unwrap_or_default()
    }
}

/// Whether a gap is small enough to fill from storage rather than announce.
pub fn fillable(gap: &Gap) -> bool {
    gap.upto - gap.after <= RECOVERY_MAX
}

/// `resync_required` for a conversation whose messages this socket could not all be sent.
pub fn resync_notice(conversation: ConversationId) -> ServerFrame {
    ServerFrame::Error(ErrorBody {
        code: "resync_required",
        message: format!(
            "messages of conversation {conversation} were missed: reload its history or rejoin with since_seq"
        ),
        conversation_id: Some(conversation),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: SocketId = SocketId {
        instance: crate::domain::events::InstanceId(1),
        session: 1,
    };
    const OTHER: SocketId = SocketId {
        instance: crate::domain::events::InstanceId(2),
        session: 1,
    };
    const C: ConversationId = ConversationId(7);

    fn frame(seq: i64, from: SocketId) -> Outbound {
        Outbound {
            wire: framed(format!("m{seq}").as_bytes()),
            kind: FrameKind::Chat {
                conversation: C,
                seq,
            },
            skip: Some(from),
        }
    }

    fn texts(out: &Out) -> Vec<String> {
        out.iter()
            .map(|w| String::from_utf8(crate::realtime::port::payload(w).to_vec()).unwrap())
            .collect()
    }

    fn accept_all(s: &mut Streams, frames: Vec<Outbound>) -> (Vec<String>, Option<Gap>) {
        let mut out = Out::new();
        let mut gap = None;
        for f in frames {
            if let Some(g) = s.accept(ME, f, 100, &mut out).unwrap() {
                gap = Some(g);
            }
        }
        (texts(&out), gap)
    }

    #[test]
    fn own_frames_move_the_cursor_without_being_sent() {
        let mut s = Streams::default();
        s.begin_join(C);
        assert!(s.joined(C, 0).is_empty());
        let (out, gap) = accept_all(
            &mut s,
            vec![
                frame(1, OTHER),
                frame(2, ME),
                frame(3, OTHER),
                frame(3, OTHER),
            ],
        );
        assert_eq!(out, ["m1", "m3"]);
        assert_eq!(gap, None);
    }

    #[test]
    fn a_gap_waits_for_its_fill_and_then_everything_follows_in_order() {
        let mut s = Streams::default();
        s.begin_join(C);
        s.joined(C, 0);
        s.note_own(C, "mine");
        let (out, gap) = accept_all(
            &mut s,
            vec![frame(1, OTHER), frame(4, OTHER), frame(5, OTHER)],
        );
        assert_eq!(out, ["m1"]);
        let gap = gap.expect("a gap after 1");
        assert_eq!((gap.after, gap.upto), (1, 3));
        let msg = |seq: i64, cmid: &str| Message {
            id: crate::db::MessageId(seq),
            conversation_id: C,
            seq,
            sender_id: UserId(1),
            content: "x".into(),
            attachment: None,
            client_msg_id: cmid.into(),
            created_at: chrono::Utc::now(),
        };
        let mut out = Out::new();
        let rest = s.filled(
            gap,
            UserId(1),
            Some(vec![msg(2, "a"), msg(3, "mine")]),
            &mut out,
        );
        assert_eq!(out.len(), 1, "seq 2 sent, seq 3 (own) left out");
        assert!(texts(&out)[0].contains("\"seq\":2"));
        let (out, gap) = accept_all(&mut s, rest);
        assert_eq!(out, ["m4", "m5"]);
        assert_eq!(gap, None);
    }

    #[test]
    fn a_fill_that_cannot_be_had_announces_resync_and_moves_on() {
        let mut s = Streams::default();
        s.begin_join(C);
        s.joined(C, 0);
        let (_, gap) = accept_all(&mut s, vec![frame(3, OTHER)]);
        let mut out = Out::new();
        let rest = s.filled(gap.unwrap(), UserId(1), None, &mut out);
        assert!(texts(&out)[0].contains("resync_required"));
        let (out, _) = accept_all(&mut s, rest);
        assert_eq!(out, ["m3"]);
    }

    #[test]
    fn a_fill_overtaken_by_a_rejoin_is_ignored() {
        let mut s = Streams::default();
        s.begin_join(C);
        s.joined(C, 0);
        let (_, gap) = accept_all(&mut s, vec![frame(3, OTHER)]);
        s.begin_join(C);
        s.joined(C, 3);
        let mut out = Out::new();
        assert!(s.filled(gap.unwrap(), UserId(1), None, &mut out).is_empty());
        assert!(out.is_empty());
    }
}
