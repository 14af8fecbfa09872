//! Deterministic pod UIDs, container IDs and PIDs: the same fixture gives the
//! same names on every run, so snapshots are stable.

/// splitmix64 seeded from a string (FNV-1a).
pub struct Ids {
    state: u64,
    next_pid: u32,
}

impl Ids {
    pub fn new(seed: &str) -> Ids {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Ids {
            state: h,
            next_pid: 1000 + (h % 2000) as u32,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(len);
        s
    }

    /// A 64-hex container ID, as docker, containerd and CRI-O name them.
    pub fn container_id(&mut self) -> String {
        self.hex(64)
    }

    /// A version-4 UUID, as the API server gives pods (`8f2c1e4a-3b7d-4c21-9e0f-...`).
    pub fn pod_uid(&mut self) -> String {
        let h = self.hex(32);
        let variant = ['8', '9', 'a', 'b'][(self.next_u64() % 4) as usize];
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            variant,
            &h[17..20],
            &h[20..32]
        )
    }

    /// Ascending, plausible PIDs.
    pub fn pid(&mut self) -> u32 {
        self.next_pid += 1 + (self.next_u64() % 97) as u32;
        self.next_pid
    }

    pub fn pids(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.pid()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_well_formed() {
        let mut a = Ids::new("x");
        let mut b = Ids::new("x");
        assert_eq!(a.pod_uid(), b.pod_uid());
        let uid = a.pod_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid.as_bytes()[14], b'4');
        let cid = a.container_id();
        assert_eq!(cid.len(), 64);
        assert!(cid.bytes().all(|c| c.is_ascii_hexdigit()));
        let p1 = a.pid();
        assert!(a.pid() > p1);
    }
}
