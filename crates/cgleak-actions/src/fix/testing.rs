//! For the plans' unit tests: a [`FixHost`] on a fixture tree (cgleak-fixtures: a fake host
//! root in a temporary directory), with the census and the judge's report as `cgleak fix`
//! takes them before planning.

use std::path::Path;

use cgleak_model::census::{census_with, Census, CensusInputs};
use cgleak_model::verdict::{check, NodeFacts};
use cgleak_readers::kubelet::running_kubelet;
use cgleak_readers::HostPaths;

use super::FixHost;

/// The host at `root` as `cgleak fix` sees it, and its census.
pub fn fix_host(root: &Path) -> (FixHost, Census) {
    let host = HostPaths::new(root);
    let inputs = CensusInputs::read(&host).unwrap_or_else(|e| panic!("census inputs of {}: {e}", root.display()));
    let census = census_with(&host, inputs.clone()).unwrap_or_else(|e| panic!("census of {}: {e}", root.display()));
    let judgement = check(census.clone(), NodeFacts::read(&host));
    let fh = FixHost {
        host: host.clone(),
        layout: inputs.layout,
        memory: inputs.memory,
        era: inputs.era,
        headroom: census.memcg.headroom,
        dying: census.memcg.dying,
        kubelet: running_kubelet(&host),
        judgement: Some(judgement),
    };
    (fh, census)
}
