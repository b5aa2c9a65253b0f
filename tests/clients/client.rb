# One job (tests/clients/README.md) with Dalli, which speaks the binary
# protocol (Debian 12's 3.0.6).
#
#     ruby client.rb < job.json
require 'base64'
require 'dalli'
require 'json'

job = JSON.parse($stdin.read)
# One failure marks the server down, so an error shows at once instead of
# after retries. compress: false: Dalli 3.0.6 deflates a value of 4 KiB or
# more by default (flag 2), which objcached refuses as not JSON
# (docs/client.md); unlike raw, this option is taken client-wide.
client = Dalli::Client.new(job['addr'], socket_timeout: 6, socket_max_failures: 1,
                                        down_retry_delay: 0, compress: false)
b64 = ->(v) { v.nil? ? nil : Base64.strict_encode64(v) }
if job.key?('get_one')
  puts JSON.generate('one' => b64.call(client.get(job['get_one'])))
  exit
end
found = client.get_multi(*job['get'])
out = { 'get' => job['get'].to_h { |k| [k, b64.call(found[k])] } }
unless job.key?('push_key')
  puts JSON.generate(out)
  exit
end
# raw: the string as it is; Dalli 3.0.6 takes the option per call only (a
# client-wide raw: true is ignored, and the value would go as Marshal data).
value = Base64.strict_decode64(job['push_value'])
out['push'] = client.set(job['push_key'], value, nil, raw: true) ? true : false
out['after_push'] = b64.call(client.get(job['push_key']))
out['tombstone'] = client.delete(job['tombstone']) ? true : false
out['after_tombstone'] = b64.call(client.get(job['tombstone']))
puts JSON.generate(out)
