<?php
// One job (tests/clients/README.md) with php-memcached.
//
//     php client.php ascii|binary < job.json
$job = json_decode(file_get_contents('php://stdin'), true);
$m = new Memcached();
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, $argv[1] === 'binary');
$m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 2000);
// php-memcached compresses a value over 2000 bytes by default (a flag bit),
// which objcached refuses as not JSON (docs/client.md).
$m->setOption(Memcached::OPT_COMPRESSION, false);
$addr = $job['addr'];
if ($addr[0] === '/') {
    $m->addServer($addr, 0);
} else {
    $colon = strrpos($addr, ':');
    $m->addServer(substr($addr, 0, $colon), (int)substr($addr, $colon + 1));
}
function b64($v) { return $v === false || $v === null ? null : base64_encode($v); }
function fail($m, $what) {
    fwrite(STDERR, "$what: " . $m->getResultCode() . ' ' . $m->getResultMessage() . "\n");
    exit(3);
}
if (isset($job['get_one'])) {
    $v = $m->get($job['get_one']);
    if ($v === false && $m->getResultCode() !== Memcached::RES_NOTFOUND) fail($m, 'get');
    echo json_encode(['one' => b64($v)]), "\n";
    exit(0);
}
$found = $m->getMulti($job['get']);
if ($found === false) fail($m, 'getMulti');
$out = ['get' => []];
foreach ($job['get'] as $k) $out['get'][$k] = b64($found[$k] ?? null);
if (!isset($job['push_key'])) {
    echo json_encode($out), "\n";
    exit(0);
}
$out['push'] = $m->set($job['push_key'], base64_decode($job['push_value']));
if (!$out['push'] && $m->getResultCode() !== Memcached::RES_NOTSTORED) fail($m, 'set');
$v = $m->get($job['push_key']);
if ($v === false && $m->getResultCode() !== Memcached::RES_NOTFOUND) fail($m, 'get');
$out['after_push'] = b64($v);
$out['tombstone'] = $m->delete($job['tombstone']);
if (!$out['tombstone'] && $m->getResultCode() !== Memcached::RES_NOTFOUND) fail($m, 'delete');
$v = $m->get($job['tombstone']);
if ($v === false && $m->getResultCode() !== Memcached::RES_NOTFOUND) fail($m, 'get');
$out['after_tombstone'] = b64($v);
echo json_encode($out), "\n";
