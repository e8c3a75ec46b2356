"""The edge, beside the microscope: which blocks are ready, coding them, checking the round trip in
another process, shipping the containers and pruning what the data center confirmed."""
