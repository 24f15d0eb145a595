//! Group commit for chat messages on SQLite. SQLite has one writer, so a transaction per
//! message makes every conversation wait for every other one's BEGIN, statements and
//! COMMIT. This writer thread drains the messages that are waiting (of different
//! conversations: the per-conversation ordering lock keeps two of one conversation out of
//! the same batch) into one transaction, and answers each message only after the COMMIT:
//! an ack still means "stored".

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::chat::{insert_batch_sqlite, MessageRow, NewMessage};
use super::{Conn, Db};
use crate::error::{AppError, AppResult};

/// Messages waiting for the writer; senders wait (backpressure) when it is full.
const QUEUE: usize = 4096;
/// Most messages in one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<AppResult<(MessageRow, bool)>>;

/// Handle to the writer thread.
pub struct MessageWriter {
    tx: mpsc::Sender<(NewMessage, Reply)>,
}

impl MessageWriter {
    /// Starts the writer for a SQLite database; `None` for PostgreSQL, whose concurrent
    /// writers need no grouping.
    pub fn start(db: &Db) -> Option<Arc<MessageWriter>> {
        if !matches!(db, Db::Sqlite { .. }) {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let db = db.clone();
        match std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || run(db, rx))
        {
            Ok(_) => Some(Arc::new(MessageWriter { tx })),
            Err(e) => {
                log::error!(
                    "cannot start the chat writer thread, storing one message per transaction: {e}"
                );
                None
            }
        }
    }

    /// Stores one message; resolves after its transaction committed.
    pub async fn insert(&self, new: NewMessage) -> AppResult<(MessageRow, bool)> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((new, reply))
            .await
            .map_err(|_| AppError::internal("chat writer stopped"))?;
        answer
            .await
            .map_err(|_| AppError::internal("chat writer dropped a message"))?
    }
}

fn run(db: Db, mut rx: mpsc::Receiver<(NewMessage, Reply)>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.into_iter().unzip();
        let stored = db.write_conn().and_then(|mut conn| match &mut conn {
            Conn::Sqlite(c) => insert_batch_sqlite(c, &messages),
            Conn::Pg(_) => Err(AppError::internal("chat writer on PostgreSQL")),
        });
        match stored {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                log::warn!(
                    "chat writer: a batch of {} messages failed: {e}",
                    replies.len()
                );
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
