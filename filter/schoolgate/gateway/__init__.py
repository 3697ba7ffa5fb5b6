"""The gateway itself: the interception CA, the nftables ruleset, DHCP leases, systemd notify.
It imports nothing of the decision pipeline."""
