"""The box's operating system as the appliance sees it: clock, time sync."""
