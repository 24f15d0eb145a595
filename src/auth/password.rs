//! Password hashing with argon2id (the crate's default parameters). CPU-heavy: call from
//! blocking threads only.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::{AppError, AppResult};

pub fn hash(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(format!("argon2: {e}")))
}

pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, checked against when the username does not exist, so that
/// a failed login takes as long whether or not the user exists.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("not-a-real-password-0123456789").unwrap_or_default())
}

/// Threads that run argon2 for requests. Few and dedicated: each hash allocates 19 MiB,
/// and glibc keeps freed memory in the arena of the thread that used it, so spreading
/// hashes over the blocking pool's many threads would pin far more memory.
const HASHER_THREADS: usize = 2;
/// Hashes waiting for a thread; past this, logins are told to try again (503).
const HASHER_QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

fn hasher() -> &'static std::sync::mpsc::SyncSender<Job> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(HASHER_QUEUE);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..HASHER_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start argon2 thread {i}: {e}");
            }
        }
        tx
    })
}

/// Runs `f` on a hasher thread, off the async workers and without holding a database
/// connection.
async fn on_hasher<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    hasher().try_send(job).map_err(|e| match e {
        std::sync::mpsc::TrySendError::Full(_) => {
            AppError::Unavailable("too many logins at once, try again".into())
        }
        std::sync::mpsc::TrySendError::Disconnected(_) => AppError::internal("argon2 threads gone"),
    })?;
    rx.await
        .map_err(|_| AppError::internal("argon2 job dropped"))
}

/// [`hash`] on a hasher thread.
pub async fn hash_async(password: String) -> AppResult<String> {
    on_hasher(move || hash(&password)).await?
}

/// [`verify`] on a hasher thread; `None` checks against [`dummy_hash`] and fails.
pub async fn verify_async(password: String, stored: Option<String>) -> AppResult<bool> {
    on_hasher(move || match stored {
        Some(h) => verify(&password, &h),
        None => {
            verify(&password, dummy_hash());
            false
        }
    })
    .await
}
