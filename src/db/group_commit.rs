//! Group commit for chat messages, on both backends. SQLite has one writer, so a
//! transaction per message makes every conversation wait for every other one's BEGIN,
//! statements and COMMIT; PostgreSQL pays a WAL flush and several round trips per commit.
//! This writer thread drains the messages that are waiting into one transaction
//! (if it fails, each is retried in a transaction of its own, so a failing message fails
//! alone) and answers each only after the COMMIT: an ack still means "stored".
//!
//! It is also what orders a conversation's messages: they are stored in the order they
//! were queued (several of one conversation may share a transaction, with consecutive
//! `seq`s), and the `after_commit` hook sees every commit's new messages in that order, on
//! this one thread, before anyone is answered. The chat domain publishes them from there.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::chat::{insert_batch, MessageRow, NewMessage};
use super::Db;
use crate::error::{AppError, AppResult};

/// Messages waiting for the writer; senders wait (backpressure) when it is full.
const QUEUE: usize = 4096;
/// Most messages in one transaction.
const MAX_BATCH: usize = 256;

/// A stored message: the row, and whether it is new (false: a repeated `client_msg_id`
/// found the original).
pub type Stored = AppResult<(MessageRow, bool)>;

/// Called on the writer thread after each commit with the new messages and their tags, in
/// `seq` order per conversation. Answers to the senders wait until it returns.
pub type AfterCommit<T> = Box<dyn FnMut(Vec<(T, MessageRow)>) + Send>;

struct Job<T> {
    new: NewMessage,
    tag: T,
    reply: oneshot::Sender<Stored>,
}

/// Handle to the writer thread. `T` is what the caller attaches to each message for the
/// hook (who sent it, its attachment).
pub struct MessageWriter<T> {
    tx: mpsc::Sender<Job<T>>,
}

/// A queued message's answer, available once its transaction committed.
#[derive(Debug)]
pub struct Ticket(oneshot::Receiver<Stored>);

impl Ticket {
    pub async fn stored(self) -> Stored {
        self.0
            .await
            .map_err(|_| AppError::internal("chat writer dropped a message"))?
    }
}

impl<T: Send + 'static> MessageWriter<T> {
    /// Starts the writer thread for either backend.
    pub fn start(db: &Db, after_commit: AfterCommit<T>) -> AppResult<Arc<MessageWriter<T>>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let db = db.clone();
        match std::thread::Builder::new()
            .name("chat-writer".into())
            .spawn(move || run(db, rx, after_commit))
        {
            Ok(_) => Ok(Arc::new(MessageWriter { tx })),
            Err(e) => Err(AppError::internal(format!(
                "cannot start the chat writer thread: {e}"
            ))),
        }
    }

    /// Queues one message behind every message queued before it; waits only while the
    /// queue is full. The ticket answers after the message's transaction committed.
    pub async fn queue(&self, new: NewMessage, tag: T) -> AppResult<Ticket> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { new, tag, reply })
            .await
            .map_err(|_| AppError::internal("chat writer stopped"))?;
        Ok(Ticket(answer))
    }
}

fn run<T>(db: Db, mut rx: mpsc::Receiver<Job<T>>, mut after_commit: AfterCommit<T>) {
    // On PostgreSQL the writer keeps its connection while batches succeed: a checkout
    // tests the connection with a round trip of its own. (SQLite's one write connection
    // is shared with every other writer: it goes back to the pool after each batch.)
    let keep = matches!(db, Db::Pg(_));
    let mut kept: Option<super::Conn> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let messages: Vec<&NewMessage> = batch.iter().map(|j| &j.new).collect();
        let conn = match kept.take() {
            Some(conn) => Ok(conn),
            None => db.write_conn(),
        };
        let stored = conn.and_then(|mut conn| {
            let stored = insert_batch(&mut conn, &messages);
            // Any failure gives the connection back, so that the pool checks it.
            let all_ok = matches!(&stored, Ok(results) if results.iter().all(Result::is_ok));
            if keep && all_ok {
                kept = Some(conn);
            }
            stored
        });
        match stored {
            Ok(results) => {
                let mut fresh = Vec::new();
                let mut replies = Vec::with_capacity(batch.len());
                for (job, result) in batch.into_iter().zip(results) {
                    if let Ok((row, true)) = &result {
                        fresh.push((job.tag, row.clone()));
                    }
                    replies.push((job.reply, result));
                }
                if !fresh.is_empty() {
                    after_commit(fresh);
                }
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                log::warn!(
                    "chat writer: a batch of {} messages failed: {e}",
                    batch.len()
                );
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
