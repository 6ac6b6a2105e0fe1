//! Arbitrary text through the agent's pure probe parsers (the `/proc`,
//! `/sys` and `/etc` file formats). They must never panic, and each input
//! line yields at most one entry or one skip.
#![no_main]

use glimpse_agent::probe::{
    parse_fib_trie, parse_hostname, parse_if_inet6, parse_kernel_release, parse_mac, parse_model,
    parse_operstate, parse_os_release, parse_proc_net_dev, parse_proc_net_route, parse_sysfs_number,
    parse_uptime, KernelByteOrder, Parsed, SiteNames,
};
use libfuzzer_sys::fuzz_target;

fn check<T>(parsed: &Parsed<T>, lines: usize) {
    assert_eq!(parsed.skipped > 0, parsed.first_error.is_some());
    assert!(parsed.items.len() + parsed.skipped <= lines);
}

fuzz_target!(|text: &str| {
    let lines = text.lines().count();
    check(&parse_proc_net_dev(text), lines);
    check(&parse_if_inet6(text), lines);
    check(&parse_fib_trie(text), lines);
    check(&parse_proc_net_route(text, KernelByteOrder::Little), lines);
    check(&parse_proc_net_route(text, KernelByteOrder::Big), lines);
    check(&parse_os_release(text), lines);
    let _ = parse_uptime(text);
    // The one-value sysfs/proc parsers: cheap, same input.
    let _ = parse_hostname(text);
    let _ = parse_model(text);
    let _ = parse_kernel_release(text);
    let _ = parse_mac(text);
    let _ = parse_operstate(text);
    let _ = parse_sysfs_number(text);
    // The DNS resolver's log: a bounded map whatever it says.
    let mut names = SiteNames::new(64);
    names.feed(text);
    assert!(names.len() <= 64);
});
