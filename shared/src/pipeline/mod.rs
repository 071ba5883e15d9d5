//! The request pipeline's rules, below the web layer: what a request resolves to ([`plan`]),
//! the body each provider gets ([`body`]), the rate-limit policy ([`limits`]), spend caps and
//! balances ([`caps`]) and the failover loop ([`failover`]). Nothing here knows HTTP: the
//! handlers in `app` run these stages in order, cheapest refusals first.

pub mod body;
pub mod caps;
pub mod failover;
pub mod limits;
pub mod plan;
