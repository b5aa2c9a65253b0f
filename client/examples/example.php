<?php
// Fetch users from objcached with php-memcached (Debian: php-memcached, php-cli).
//
//     php example.php [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default),
//                                   unix:/path/to.sock or [::1]:11311
$addr = $argv[1] ?? '127.0.0.1:11311';
$m = new Memcached();
// The classic ASCII protocol (php-memcached's default); objcached answers the
// binary one (true) as well.
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, false);
$m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 1000);  // ms
if (str_starts_with($addr, 'unix:')) {
    $m->addServer(substr($addr, 5), 0);
} else {
    $colon = strrpos($addr, ':');
    $m->addServer(trim(substr($addr, 0, $colon), '[]'), (int)substr($addr, $colon + 1));
}
$keys = ['User:1', 'User:2', 'User:999999'];
$found = $m->getMulti($keys);  // one "get User:1 User:2 User:999999"
if ($found === false) {
    fwrite(STDERR, "getMulti: " . $m->getResultMessage() . "\n");
    exit(3);
}
foreach ($keys as $key) {
    if (array_key_exists($key, $found)) {
        $user = json_decode($found[$key], true);
        echo "$key = {$user['name']} <{$user['email']}>\n";
    } else {
        echo "$key: not found\n";
    }
}
