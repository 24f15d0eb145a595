//! HTTP routes for checkins (to be filled in by its issue).

use actix_web::web;

pub fn routes(_cfg: &mut web::ServiceConfig) {}
