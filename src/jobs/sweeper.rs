//! The sweeper actor: every `SPOTTER_SWEEP_INTERVAL_SECS` it marks silent users offline,
//! recomputes the check-in statistics from the database (publishing a correction if the
//! live counters drifted), closes check-ins left open too long, removes uploads never
//! attached to a message (after `SPOTTER_UPLOAD_ORPHAN_SECS`), and prunes expired tokens.
//! A failing step is logged and the others still run; the next run tries again. With
//! several instances only the holder of the sweeper duty runs it (`crate::cluster`).

use actix::prelude::*;

use crate::state::AppState;

/// The sweeper actor. The presence sweep runs on every tick; the database maintenance
/// runs beside it, one run at a time, so that a database that stopped answering (each
/// step then waits for the pool's timeout) never holds presence back: users still go
/// offline on time, and their flips wait in presence's own retry queue.
pub struct Sweeper {
    state: AppState,
    sweeping: bool,
    maintaining: bool,
}

impl Sweeper {
    pub fn new(state: AppState) -> Sweeper {
        Sweeper {
            state,
            sweeping: false,
            maintaining: false,
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        // With several instances, one sweeps: the holder of the duty (`crate::cluster`).
        if !self.state.cluster.holds_duty() {
            return;
        }
        self.state.metrics.sweeper_runs.inc();
        if !self.sweeping {
            self.sweeping = true;
            let state = self.state.clone();
            let fut = async move { sweep_presence(&state).await };
            ctx.spawn(fut.into_actor(self).map(|_, act, _| act.sweeping = false));
        }
        if self.maintaining {
            log::warn!("sweeper: previous maintenance still going, skipping this one");
            return;
        }
        self.maintaining = true;
        let state = self.state.clone();
        let fut = async move { maintain(&state).await };
        ctx.spawn(
            fut.into_actor(self)
                .map(|_, act, _| act.maintaining = false),
        );
    }
}

/// Users silent too long go offline.
async fn sweep_presence(state: &AppState) {
    match state.presence.sweep().await {
        Ok(n) if n > 0 => log::info!("sweeper: {n} users went offline"),
        Ok(_) => {}
        Err(e) => log::error!("sweeper: presence sweep failed: {e}"),
    }
}

/// The database steps: every step runs even if another failed.
async fn maintain(state: &AppState) {
    if let Err(e) = crate::domain::checkins::sweep(state).await {
        log::error!("sweeper: check-in maintenance failed: {e}");
    }
    if let Err(e) = crate::domain::files::remove_orphans(state).await {
        log::error!("sweeper: removing unattached uploads failed: {e}");
    }
    let now = crate::time::now();
    state.revoked.prune(now.timestamp());
    let at = crate::time::to_db(now);
    if let Err(e) = state
        .db
        .write(move |c| crate::db::users::prune_tokens(c, at))
        .await
    {
        log::error!("sweeper: pruning expired tokens failed: {e}");
    }
}

impl Actor for Sweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.state.config.sweep_interval, |act, ctx| act.run(ctx));
    }
}
