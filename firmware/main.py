from atls.supervisor import main

main()
