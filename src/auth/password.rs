//! Password hashing with argon2id (the crate's default parameters). CPU-heavy: call from
//! blocking threads only.
//!
//! Argon2 needs 19 MiB of working memory per hash. Allocated per hash, the allocator keeps
//! it after the first few logins (231 MB at rest after 21 of them), so each hasher thread
//! computes into one block buffer of its own, allocated once and reused for every hash and
//! every check, and gives the buffer's pages back to the system whenever it has nothing
//! left to do. Other threads (the CLI, the first start) use a buffer for one hash.

use std::cell::{Cell, RefCell};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::error::{AppError, AppResult};

thread_local! {
    /// True on hasher threads, which keep their working memory between hashes.
    static KEEPS_MEMORY: Cell<bool> = const { Cell::new(false) };
    /// A hasher thread's working memory (empty elsewhere).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Computes argon2 of `password` with `salt` into an output of `len` bytes, in this
/// thread's reused working memory (hasher threads) or in memory for this one hash.
fn compute(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> Result<Output, argon2::password_hash::Error> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let needed = argon.params().block_count();
    let run = |blocks: &mut [Block]| {
        Output::init_with(len, |out| {
            argon
                .hash_password_into_with_memory(password, salt, out, &mut *blocks)
                .map_err(argon2::password_hash::Error::from)
        })
    };
    if KEEPS_MEMORY.with(Cell::get) {
        BLOCKS.with(|cell| {
            let mut blocks = cell.borrow_mut();
            if blocks.len() < needed {
                blocks.resize(needed, Block::default());
            }
            run(&mut blocks[..needed])
        })
    } else {
        run(&mut vec![Block::default(); needed])
    }
}

/// Page size assumed for releasing memory (smaller than or equal to the real one is fine:
/// the range is only rounded inwards).
const PAGE: usize = 4096;

/// A hasher thread with nothing to do gives its working memory's pages back to the
/// system, keeping the buffer itself: the pages come back, zeroed, when the next hash
/// touches them (a few milliseconds of page faults on a hash that takes tens). Memory at
/// rest is then what it was before any login.
fn release_idle_memory() {
    BLOCKS.with(|cell| {
        let blocks = cell.borrow_mut();
        let start = blocks.as_ptr() as usize;
        let end = start + std::mem::size_of_val(&blocks[..]);
        let first = start.next_multiple_of(PAGE);
        let last = end / PAGE * PAGE;
        if last <= first {
            return;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: the range lies inside the buffer this thread owns exclusively (borrowed
        // mutably above, so nothing reads it meanwhile), rounded inwards to whole pages.
        // MADV_DONTNEED on private anonymous memory refills the pages with zeros on the
        // next access, and all-zero bytes are a valid `Block` (an array of u64).
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_DONTNEED,
            );
        }
    });
}

pub fn hash(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    let argon = Argon2::default();
    let len = argon
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let phc = || -> Result<String, argon2::password_hash::Error> {
        let output = compute(&argon, password.as_bytes(), salt.as_salt(), len)?;
        let hash = PasswordHash {
            algorithm: Algorithm::default().ident(),
            version: Some(Version::default().into()),
            params: argon.params().try_into()?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(hash.to_string())
    };
    phc().map_err(|e| AppError::internal(format!("argon2: {e}")))
}

/// Checks `password` against a stored PHC string, with the parameters it names.
pub fn verify(password: &str, stored: &str) -> bool {
    let check = || -> Result<bool, argon2::password_hash::Error> {
        let parsed = PasswordHash::new(stored)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let argon = Argon2::new(algorithm, version, params);
        let computed = compute(&argon, password.as_bytes(), salt, expected.len())?;
        // `Output`'s equality is constant-time.
        Ok(computed == expected)
    };
    check().unwrap_or(false)
}

/// A hash of a random password, checked against when the username does not exist, so that
/// a failed login takes as long whether or not the user exists.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("not-a-real-password-0123456789").unwrap_or_default())
}

/// Threads that run argon2 for requests. Few and dedicated: each keeps 19 MiB of working
/// memory, so spreading hashes over the blocking pool's many threads would pin far more.
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
                .spawn(move || {
                    KEEPS_MEMORY.with(|k| k.set(true));
                    let lock = || rx.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        let next = lock().try_recv();
                        let job = match next {
                            Ok(job) => job,
                            Err(std::sync::mpsc::TryRecvError::Empty) => {
                                release_idle_memory();
                                match lock().recv() {
                                    Ok(job) => job,
                                    Err(_) => return,
                                }
                            }
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                        };
                        job();
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

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_standard_phc_strings() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        // The crate's own verifier agrees with ours, both ways.
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify("battery staple", &theirs));
        assert!(!verify("battery stapler", &theirs));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horse!", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn hasher_threads_reuse_their_memory_and_honour_stored_parameters() {
        KEEPS_MEMORY.with(|k| k.set(true));
        let h = hash("pw-123456").unwrap();
        let kept = BLOCKS.with(|b| b.borrow().as_ptr() as usize);
        release_idle_memory();
        assert!(verify("pw-123456", &h));
        assert_eq!(kept, BLOCKS.with(|b| b.borrow().as_ptr() as usize));
        // A hash made with other (smaller) parameters still checks.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify("pw", &small));
        assert!(!verify("pw2", &small));
    }
}
