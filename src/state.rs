//! The application state shared by HTTP handlers, sessions and scheduled jobs.

use std::sync::Arc;

use actix::Addr;

use crate::auth::jwt::JwtKeys;
use crate::auth::revocation::RevocationList;
use crate::auth::throttle::LoginThrottle;
use crate::broker::Broker;
use crate::config::Config;
use crate::db::Db;
use crate::domain::chat::ChatState;
use crate::domain::checkins::StatsTracker;
use crate::domain::directory::Directory;
use crate::domain::presence::Presence;
use crate::metrics::Metrics;
use crate::realtime::hub::Hub;

/// Everything a request, a socket or a job needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub jwt: Arc<JwtKeys>,
    pub revoked: Arc<RevocationList>,
    pub throttle: Arc<LoginThrottle>,
    pub directory: Arc<Directory>,
    pub metrics: Arc<Metrics>,
    pub hub: Addr<Hub>,
    pub presence: Arc<dyn Presence>,
    pub broker: Arc<dyn Broker>,
    /// This instance among several: the sweeper duty, what is shared.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub chat: Arc<ChatState>,
    pub stats: Arc<StatsTracker>,
    /// Unauthenticated sockets per client address.
    pub ws_gate: Arc<crate::realtime::gate::Gate>,
}
