//! Rate limits per principal (transport, role and client) and command class,
//! with governor's keyed limiters: thread-safe by construction, unlike the
//! predecessor's unlocked per-process dict.
//!
//! May import: `auth`, `config`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Role;
use crate::config::LimitSettings;

pub struct Limits {
    read: DefaultKeyedRateLimiter<String>,
    write: DefaultKeyedRateLimiter<String>,
    admin: DefaultKeyedRateLimiter<String>,
}

fn limiter(per_minute: u32) -> DefaultKeyedRateLimiter<String> {
    let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_minute(n))
}

impl Limits {
    pub fn new(s: &LimitSettings) -> Self {
        Self {
            read: limiter(s.read_per_minute),
            write: limiter(s.write_per_minute),
            admin: limiter(s.admin_per_minute),
        }
    }

    /// `Err(wait)` when `principal` used up its quota for commands of `class`.
    pub fn check(&self, class: Role, principal: &str) -> Result<(), Duration> {
        let l = match class {
            Role::Read => &self.read,
            Role::Write => &self.write,
            Role::Admin => &self.admin,
        };
        l.check_key(&principal.to_string())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Drops state of principals that are back to a full quota (memory bound).
    pub fn shrink(&self) {
        for l in [&self.read, &self.write, &self.admin] {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_per_principal_and_class() {
        let l = Limits::new(&LimitSettings {
            read_per_minute: 2,
            write_per_minute: 1,
            admin_per_minute: 1,
            ..LimitSettings::default()
        });
        assert!(l.check(Role::Read, "mqtt:read:-").is_ok());
        assert!(l.check(Role::Read, "mqtt:read:-").is_ok());
        let wait = l.check(Role::Read, "mqtt:read:-").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        assert!(
            l.check(Role::Read, "http:read:10.0.0.2").is_ok(),
            "another principal"
        );
        assert!(l.check(Role::Write, "mqtt:read:-").is_ok(), "another class");
        l.shrink();
    }
}
