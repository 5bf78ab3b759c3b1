//! Network listeners in front of a [`crate::BrokerHandle`]: one task per connection, codecs
//! from [`crate::protocol`], no broker logic of their own.

pub mod kafka;
pub mod native;
