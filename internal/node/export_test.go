package node

// RunningDev is runningDev, for the tests of package node_test.
var RunningDev = runningDev
