# Fetch users from objcached with Dalli (Debian: ruby-dalli).
#
#     ruby example.rb [ADDRESS]     ADDRESS: 127.0.0.1:11311 (default),
#                                   unix:/path/to.sock or /path/to.sock
#
# Debian 12's Dalli (3.0.6) speaks memcached's binary protocol: get_multi is
# a quiet get per key then a noop, which objcached serves as one request.
# objcached returns flags 0, so values come back as the JSON strings. To push
# (set), pass raw: true with each call (client.set(key, json, nil, raw: true)):
# Dalli 3.0.6 ignores a client-wide raw: true and would send Marshal data;
# and make the client with compress: false, or a value of 4 KiB or more goes
# deflated, which objcached refuses as not JSON.
require 'dalli'
require 'json'

addr = (ARGV[0] || '127.0.0.1:11311').delete_prefix('unix:')
client = Dalli::Client.new(addr, socket_timeout: 6, socket_max_failures: 1)
keys = ['User:1', 'User:2', 'User:999999']
found = client.get_multi(*keys)
keys.each do |key|
  if found.key?(key)
    user = JSON.parse(found[key])
    puts "#{key} = #{user['name']} <#{user['email']}>"
  else
    puts "#{key}: not found"
  end
end
