//! placeholder
use kafka_protocol as _;
use peak_alloc as _;
