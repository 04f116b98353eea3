from xdpguard.cli.main import main

main()
