//! The time-series store: ticks and bars. Embedded SQLite (`timeseries.db`); ClickHouse arrives with the
//! real-storage issue behind the same messages.

use std::path::PathBuf;

use actix::prelude::*;
use sqlx::migrate::Migrator;

use super::sqlite::{boot, halt, SqliteActor, SqliteCore};
use super::HealthBoard;
use crate::actors::supervisor::{ExitNotifier, Shutdown};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite/timeseries");

/// Name of this store on the health board and in `/ready`.
pub const NAME: &str = "timeseries";

/// The time-series storage actor.
pub struct TimeSeries {
    core: SqliteCore,
}

impl TimeSeries {
    pub fn new(data_dir: PathBuf, board: HealthBoard, notifier: ExitNotifier) -> Self {
        Self {
            core: SqliteCore {
                name: NAME,
                dir: data_dir,
                file: "timeseries.db",
                migrator: &MIGRATOR,
                pool: None,
                board,
                notifier,
            },
        }
    }
}

impl SqliteActor for TimeSeries {
    fn core(&mut self) -> &mut SqliteCore {
        &mut self.core
    }
}

impl Actor for TimeSeries {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        boot(self, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        halt(self);
    }
}

impl Handler<Shutdown> for TimeSeries {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
