//! The `glimpse-collector` program under another name, so the fault tests
//! can run it as a real process and `kill -9` it. `GLIMPSE_TEST_CLOCK_OFFSET_DAYS`
//! moves its clock, to reproduce a collector whose clock is wrong.

use std::sync::Arc;

use glimpse_common::clock::{Clock, SystemClock, MILLIS_PER_DAY};

/// The system clock moved by a fixed offset.
#[derive(Debug)]
struct OffsetClock(i64);

impl Clock for OffsetClock {
    fn now_millis(&self) -> i64 {
        SystemClock.now_millis() + self.0
    }
}

fn main() -> std::process::ExitCode {
    let offset_days: i64 =
        std::env::var("GLIMPSE_TEST_CLOCK_OFFSET_DAYS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    glimpse_collector::cli::main_with_clock(Arc::new(OffsetClock(offset_days * MILLIS_PER_DAY)))
}
