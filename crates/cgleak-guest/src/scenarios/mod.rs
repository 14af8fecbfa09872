//! The scenarios. Each compares what cgleak reports with what the scenario itself did
//! or counted, and records both in its [`Outcome`].

mod bpf_walk;
mod census;
mod fill;
mod migrate;
mod move_charge;
mod runc;
mod to_limit;

use anyhow::Result;

use crate::cg::Scratch;
use crate::report::Outcome;
use crate::{Ctx, Scenario};

/// What one scenario leaves for the next: to-limit's memcgs are near-limit's head start, and those exhaustion's.
#[derive(Default)]
pub struct State {
    fill: Option<Scratch>,
    /// Index of the next fill child (`n<index>`).
    fill_next: u64,
}

pub fn run(s: Scenario, ctx: &Ctx, state: &mut State, o: &mut Outcome) -> Result<()> {
    match s {
        Scenario::Census => census::run(ctx, o),
        Scenario::BpfWalk => bpf_walk::run(ctx, o),
        Scenario::MoveCharge => move_charge::run(ctx, o),
        Scenario::Runc => runc::run(ctx, o),
        Scenario::Migrate => migrate::run(ctx, o),
        Scenario::ToLimit => to_limit::run(ctx, state, o),
        Scenario::NearLimit => fill::near_limit(ctx, state, o),
        Scenario::Exhaustion => fill::exhaustion(ctx, state, o),
    }
}
