//! The relational store: tenants, orders, fills and positions. Embedded SQLite (`relational.db`); PostgreSQL
//! arrives with the real-storage issue behind the same messages.

use std::path::PathBuf;

use actix::prelude::*;
use sqlx::migrate::Migrator;

use super::sqlite::{boot, halt, SqliteActor, SqliteCore};
use super::HealthBoard;
use crate::actors::supervisor::{ExitNotifier, Shutdown};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/relational");

/// Name of this store on the health board and in `/ready`.
pub const NAME: &str = "relational";

/// The relational storage actor.
pub struct Relational {
    core: SqliteCore,
}

impl Relational {
    pub fn new(data_dir: PathBuf, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            core: SqliteCore {
                name: NAME,
                dir: data_dir,
                file: "relational.db",
                migrator: &MIGRATOR,
                pool: None,
                board,
                notifier,
            },
        }
    }
}

impl SqliteActor for Relational {
    fn core(&mut self) -> &mut SqliteCore {
        &mut self.core
    }
}

impl Actor for Relational {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        boot(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        halt(self);
    }
}

impl Handler<Shutdown> for Relational {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        // Every write is awaited by its sender, so nothing is buffered here: stopping is enough.
        ctx.stop();
    }
}
